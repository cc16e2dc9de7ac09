"""The one exception type for mistakes a user can fix, and the one way to warn about a choice made.

Library code raises `FtftError` with a single line that names the bad value and says what was
expected. The CLI turns it into that line on stderr and exit code 2, without a traceback; anything
else is a bug and keeps its traceback. Where the library goes on with a documented default instead
of stopping, `warn` says so in one `warning:` line, once per job (rank 0 alone).
"""

import os
import sys


class FtftError(Exception):
    """A user-facing error: bad input, bad configuration, or files that do not belong together."""


def require(condition: bool, message: str) -> None:
    """Raise `FtftError(message)` unless `condition` holds."""
    if not condition:
        raise FtftError(message)


def warn(message: str) -> None:
    """Print one `warning: message` line on stderr, from rank 0 only (every rank would repeat it)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"warning: {message}", file=sys.stderr, flush=True)
