"""The one exception type that reaches users as a one-line message.

Every validation failure raises :class:`UserError`; the CLI prints ``error: <message>`` to stderr and
exits with status 2, never a traceback.
"""


class UserError(Exception):
    """Bad user input or an unusable file: the message is one line naming the problem and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
