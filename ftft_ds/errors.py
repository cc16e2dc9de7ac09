"""The one exception type for mistakes a user can fix.

Library code raises `FtftError` with a single line that names the bad value and says what was
expected. The CLI turns it into that line on stderr and exit code 2, without a traceback; anything
else is a bug and keeps its traceback.
"""


class FtftError(Exception):
    """A user-facing error: bad input, bad configuration, or files that do not belong together."""


def require(condition: bool, message: str) -> None:
    """Raise `FtftError(message)` unless `condition` holds."""
    if not condition:
        raise FtftError(message)
