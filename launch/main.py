"""Main run entry: `deepspeed [launcher options] launch/main.py [ftft train options]`.

Equivalent to `ftft train ...`; it exists so that the `deepspeed` launcher, which needs a script
path, can start it on every rank of every node. It accepts the `--local_rank` the launcher appends.
"""

import sys

from ftft_ds.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
