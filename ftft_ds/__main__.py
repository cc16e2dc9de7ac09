"""`python -m ftft_ds` is the `ftft` command."""

from .cli import main

main()
