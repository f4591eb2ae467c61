"""The one error class users see: the CLI prints its message and exits non-zero, no traceback."""


class LmstackError(Exception):
    """A problem with the user's input (path, config, file, model name, values).

    The message must say what is wrong and how to fix it, in one line: line breaks inside it (a
    library's multi-line reason, say) are folded into spaces.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))
