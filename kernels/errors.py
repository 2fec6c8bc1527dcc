"""The one error type ZSVR raises for bad user input.

ComfyUI shows an exception's message in its error dialog. Every check in the
pack raises :class:`InputError`, whose message names the input, says what was
expected and what to do, so a user never has to read a stack trace from deep
inside torch.
"""


class InputError(ValueError):
    """A user-facing error about one node input.

    ``InputError("frame_cap", "is -3", "use 0 for all frames or a positive count")``
    reads ``ZSVR input 'frame_cap': is -3. Fix: use 0 for all frames or a positive count.``
    """

    def __init__(self, input_name: str, problem: str, fix: str = ""):
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        message = f"ZSVR input '{input_name}': {problem}."
        if fix:
            message += f" Fix: {fix}."
        super().__init__(message)
