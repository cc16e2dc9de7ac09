"""`launch/main.py` with rank 1's checkpoint files written 2 s late: a slow node in a multi-node save.

DeepSpeed itself is untouched; only the moment rank 1 hands a file to its checkpoint engine moves.
"""

import os
import sys
import time

from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

from ftft_ds.cli import main

if os.environ.get("RANK") == "1":
    save = TorchCheckpointEngine.save

    def slow_save(self, state_dict, path):
        time.sleep(2)
        return save(self, state_dict, path)

    TorchCheckpointEngine.save = slow_save

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
