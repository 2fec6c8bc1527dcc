"""The kernels' error: :class:`ParameterError`, a plain ``ValueError`` naming the kernel's *own* parameter.

Kernels raise it in kornia's style, so they read well on their own. Nodes translate it into the user-facing
``InputError``, which names the *node's* input (``nodes/errors.py``: ``with kernel_inputs(x0="image"): ...``).

It sets ``__module__ = "ZSVR"``: ComfyUI shows an error's type as ``module.qualname``
(``execution.full_type_name``), which would otherwise read ``zsvr.kernels.errors.ParameterError``; with it,
``ZSVR.ParameterError``.
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


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, by its first letter: ``an EarlyStopSampler``, ``a KSAMPLER``.

    Args:
        word: the word (a node or type name).

    Returns:
        ``"an word"`` before a vowel letter, else ``"a word"``.
    """
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
