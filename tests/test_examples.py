"""Every config in examples/ loads as the command it is written for, and those that can dry-run do."""

import pytest

from ftft_ds.config import MainConfig, ReferenceConfig, load_config
from ftft_ds.pipeline import RecipeConfig
from ftft_ds.runs.prepare import check_before_start
from ftft_ds.sweep.runner import SweepConfig

from .helpers import REPO, in_process

KINDS = {
    "recipe.yaml": RecipeConfig,
    "slurm_recipe.yaml": RecipeConfig,
    "sweep.yaml": SweepConfig,
    "slurm_sweep.yaml": SweepConfig,
    "main.yaml": MainConfig,
    "lora.yaml": MainConfig,
    "reference.yaml": ReferenceConfig,
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_example_config_loads(name):
    config = load_config(KINDS[name], REPO / "examples" / name)
    if name.startswith("slurm"):
        assert config.executor.kind == "slurm"


@pytest.mark.parametrize("path", ["vader/recipe.yaml", "uci_sentences/recipe.yaml", "uci_sentences/mpnet.yaml"])
def test_real_data_recipe_loads(path):
    """The real-data recipes (their data comes from their `prepare.py`, so they are not dry-run here);
    the UCI one leaves the reference to the default, the MPNet one names MiniLM's first 2 layers."""
    config = load_config(RecipeConfig, REPO / "examples" / path)
    name = path.split("/")[0]
    assert config.data.source == (f"data/{name}_amazon_4k" if name == "vader" else f"data/{name}")
    assert (config.reference is None) == (path == "uci_sentences/recipe.yaml")
    if path.endswith("mpnet.yaml"):
        assert (config.main.model, config.reference.model, config.reference.num_layers) == ("mpnet", "minilm", 2)


def test_every_example_is_covered():
    assert {path.name for path in (REPO / "examples").glob("*.yaml")} == set(KINDS)


@pytest.mark.parametrize("name", ["recipe.yaml", "slurm_recipe.yaml"])
def test_example_recipe_dry_runs(name):
    """`ftft run EXAMPLE --dry-run`: the task loads, every model's tokenizer and size are read, and
    the cost plan prints, before anything trains or is submitted."""
    result = in_process(["run", REPO / "examples" / name, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "cost plan (" in result.output and "| ftft |" in result.output


@pytest.mark.parametrize("name", ["main.yaml", "reference.yaml"])
def test_example_run_config_passes_the_checks_made_before_start(name):
    """The checks every rank makes before its process group starts: DeepSpeed config, model, max_length."""
    check_before_start(load_config(KINDS[name], REPO / "examples" / name))
