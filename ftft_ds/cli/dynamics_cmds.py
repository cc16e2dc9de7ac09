"""`ftft map`, `ftft select`, `ftft dynamics import|export`: everything that reads recorded dynamics."""
from __future__ import annotations

from . import cli  # noqa: F401
