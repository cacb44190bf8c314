"""The exceptions that reach users as one line, and the exit status each one gets.

* :class:`UserError` -- bad input or an unusable file; the CLI prints ``error: <message>`` and exits 2.
* :class:`RunFailure` -- the input was fine but the work could not finish (a diverged run, failed
  arms of a suite); the CLI prints ``error: <message>`` and exits 1.

Anything else is an internal error: one line, exit 3, and a hint to rerun with
``BOOSTING_TICKETS_DEBUG=1`` for the traceback. No traceback ever reaches a user otherwise.
"""


class UserError(Exception):
    """Bad user input or an unusable file: the message is one line naming the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class RunFailure(Exception):
    """A run or suite could not finish although its input was valid (exit status 1)."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


#: What a run that fails for a reason of its own raises; callers that run many things catch this.
RUN_ERRORS = (UserError, RunFailure)
