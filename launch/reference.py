"""Reference run entry: `deepspeed [launcher options] launch/reference.py [ftft reference options]`.

Equivalent to `ftft reference ...`; it exists so that the `deepspeed` launcher, which needs a script
path, can start it on every rank. It accepts the `--local_rank` the launcher appends.
"""

import sys

from ftft_ds.cli import main

if __name__ == "__main__":
    main(["reference", *sys.argv[1:]])
