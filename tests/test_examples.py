"""Every config in examples/ loads as the command it is written for."""
import pytest

from ftft_ds.config import MainConfig, ReferenceConfig, load_config
from ftft_ds.pipeline import RecipeConfig
from ftft_ds.sweep.runner import SweepConfig

from .helpers import REPO

KINDS = {"recipe.yaml": RecipeConfig, "slurm_recipe.yaml": RecipeConfig, "sweep.yaml": SweepConfig,
         "slurm_sweep.yaml": SweepConfig, "main.yaml": MainConfig, "reference.yaml": ReferenceConfig}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_example_config_loads(name):
    config = load_config(KINDS[name], REPO / "examples" / name)
    if name.startswith("slurm"):
        assert config.executor.kind == "slurm"


def test_every_example_is_covered():
    assert {path.name for path in (REPO / "examples").glob("*.yaml")} == set(KINDS)
