"""Build a run's engine exactly as `ftft train` does and print what DeepSpeed made of it, as JSON:
the optimizer it built, the dtypes it trains and accumulates in, the device, the DeepSpeed
extensions it had to compile. Arguments: a JSON MainConfig mapping, as `ftft train` reads one."""

import json
import sys

import torch

from ftft_ds.config import MainConfig, from_dict
from ftft_ds.runs.prepare import prepare_run
from ftft_ds.train.runtime import init_distributed, run_folder


def main() -> None:
    cfg = from_dict(MainConfig, json.loads(sys.argv[1]))
    env = init_distributed()
    with run_folder(cfg, env):
        run = prepare_run(cfg, env, cfg.budget, "probe", eval_splits=cfg.data.eval_splits)
        engine = run.engine
        optimizer = engine.basic_optimizer
        model_dtype, accumulation_dtype = engine.get_data_types()
        built = sorted(name for name in sys.modules if name.startswith("deepspeed.ops") and name.endswith("_op"))
        report = {
            "optimizer": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
            "fused": optimizer.defaults.get("fused"),
            "model_dtype": str(model_dtype),
            "grad_accum_dtype": str(accumulation_dtype),
            "device": str(env.device),
            "world_size": env.world_size,
            "bf16": engine.bfloat16_enabled(),
            "compiled_ops": built,
            "cuda_rng": torch.cuda.initial_seed() if torch.cuda.is_available() else None,
        }
    if env.is_main:
        print("PROBE " + json.dumps(report))


if __name__ == "__main__":
    main()
