# Set-up and entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv, install PyTorch, then this package with its dependencies.
#
# TORCH picks the PyTorch build. The default pins the CPU build that machines
# without a GPU install locally; on a GPU cluster pass your own (for example
# `make test TORCH=torch`) or simply `pip install -e .` into an environment that
# already has a CUDA torch: setup.py only asks for torch>=2.1 and keeps it.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# Every target runs with the environment's bin first on PATH, as an activated venv would: its
# `deepspeed` launcher, and its `ninja` for set-up's build of DeepSpeed's CPU op, the ninja every
# run uses too (`prefer_own_ninja` in ftft_ds/train/runtime.py says why).
export PATH := $(abspath $(BIN)):$(PATH)
# Benchmarks `make bench` runs, each printing its figures (bench/bench_NAME.py; docs/testing.md lists
# them all with their run times): by default the ones that take minutes on 2 CPU cores.
BENCH ?= metrics recorder trainer

.PHONY: setup demo lint test bench gpu-check gpu-bundle clean

$(BIN)/ftft: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[demo,test]"
	$(BIN)/python -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	touch $@

setup: $(BIN)/ftft

demo: setup
	$(BIN)/ftft demo

# ruff's lint and format check (ruff.toml); `$(BIN)/ruff format .` applies the format.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers: most tests wait on process start-up, launchers or the SLURM queue as much as they
# compute. Files with module fixtures (xdist_group) go whole to one worker, so they train once;
# every other test goes wherever a worker is free. `PYTEST_ARGS=--random-order-seed=N` shuffles the order.
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS) tests

bench: setup
	for name in $(BENCH); do $(BIN)/python bench/bench_$$name.py || exit 1; done

# The GPU tests and GPU benchmarks (bench/gpu_check.py), under 10 minutes on one H100-class GPU.
# GPU_PYTHON: an interpreter with a CUDA torch and this package installed (default: .venv's).
GPU_PYTHON ?= $(BIN)/python
gpu-check: $(if $(filter $(BIN)/python,$(GPU_PYTHON)),setup)
	$(GPU_PYTHON) bench/gpu_check.py

# For a GPU node without network: the wheels its image lacks, in gpu_bundle/ (bench/gpu_bundle.py
# says how to install them there offline and run gpu-check).
gpu-bundle: setup
	$(BIN)/python bench/gpu_bundle.py

clean:
	rm -rf $(VENV) runs gpu_bundle
