"""Errors: :class:`ParameterError` for the kernels, :class:`InputError` for what users see.

Kernels raise :class:`ParameterError`, a plain ``ValueError`` that names the
kernel's *own* parameter (kornia's style), so they read well on their own.
Nodes translate it into :class:`InputError`, which names the *node's* input
(``nodes/errors.py``: ``with kernel_inputs(x0="image"): ...``); ComfyUI shows
that message in its error dialog, so a user reads which input, what was wrong
and what to do, never a stack trace from deep inside torch, and never the name
of a parameter no node has.

Both classes set ``__module__ = "ZSVR"``: ComfyUI shows an error's type as
``module.qualname`` (``execution.full_type_name``) and loads a pack with the
pack's absolute folder path as its module name, so the type would otherwise
read ``/home/.../custom_nodes/comfyui-zsvr.kernels.errors.InputError`` in the
error dialog; with it, ``ZSVR.InputError``.
"""


class ParameterError(ValueError):
    """A kernel parameter is invalid: ``ParameterError("sigmas", "is empty", "pass a 1-D schedule")``.

    Attributes:
        parameter: the kernel function's own parameter name.
        problem: what is wrong with it, as a predicate ("is -3").
        fix: what to do instead (may be empty).
    """

    __module__ = "ZSVR"  # what ComfyUI shows as the error's type: ZSVR.ParameterError, not a server path

    def __init__(self, parameter: str, problem: str, fix: str = ""):
        self.parameter = parameter
        self.problem = problem
        self.fix = fix
        super().__init__(f"{parameter} {problem}" + (f"; {fix}" if fix else ""))


class InputError(ValueError):
    """A user-facing error about one node input.

    ``InputError("frame_cap", "is -3", "use 0 for all frames or a positive count")``
    reads ``ZSVR input 'frame_cap': is -3. Fix: use 0 for all frames or a positive count.``
    """

    __module__ = "ZSVR"  # what ComfyUI shows as the error's type: ZSVR.InputError, not a server path

    def __init__(self, input_name: str, problem: str, fix: str = ""):
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        message = f"ZSVR input '{input_name}': {problem}."
        if fix:
            message += f" Fix: {fix}."
        super().__init__(message)


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, by its first letter: ``an EarlyStopSampler``, ``a KSAMPLER``.

    Args:
        word: the word (a node or type name).

    Returns:
        ``"an word"`` before a vowel letter, else ``"a word"``.
    """
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
