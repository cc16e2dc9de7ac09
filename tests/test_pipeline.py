"""`ftft run`: the recipe's table, its cost accounting, and skipping or re-running stages."""
import json

import pytest
import yaml

from .helpers import ftft, tail

RECIPE = {
    "data": {"embedded_train_size": 120},
    "main": {"model": "tiny-bert", "micro_batch_size": 8, "lr": 1.0e-3, "erm_epochs": 2, "log_every": 5},
    "reference": {"model": "tiny-bert", "num_layers": 1, "epochs": 2, "micro_batch_size": 8, "lr": 1.0e-3},
    "methods": ["erm", "ftft"],
    "seeds": [0, 1],
    "num_ranks": 1,
}


def read(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe")
    config = folder / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(folder / "out")}))
    proc = ftft(["run", config])
    assert proc.returncode == 0, tail(proc)
    return folder, proc


def test_table_structure_and_costs_add_up(recipe):
    folder, proc = recipe
    out = folder / "out"
    results = read(out / "results.json")
    assert [s["method"] for s in results["summary"]] == ["erm", "ftft"]
    assert {(r["method"], r["seed"]) for r in results["rows"]} == {("erm", 0), ("erm", 1), ("ftft", 0), ("ftft", 1)}
    erm_flops = [read(out / "main" / "erm" / f"seed{s}" / "cost.json")["train_flops"] for s in (0, 1)]
    reference_flops = read(out / "reference" / "small" / "cost.json")["train_flops"]
    for row in results["rows"]:
        main = read(out / "main" / row["method"] / f"seed{row['seed']}" / "cost.json")["train_flops"]
        expected = main + (reference_flops if row["method"] == "ftft" else 0.0)
        assert row["relative_cost"] == pytest.approx(100 * expected / (sum(erm_flops) / 2))
    ftft_row = next(r for r in results["rows"] if r["method"] == "ftft")
    assert ftft_row["train_rows"] == round(0.33 * 120)  # the subset, not the full split
    table = (out / "results.md").read_text()
    assert "| erm | 2 |" in table and "| ftft | 2 |" in table and "ood/accuracy" in table
    assert "| erm | 2 |" in proc.stdout
    assert (out / "cost_vs_ood.png").is_file() and (out / "select" / "small" / "data_map.png").is_file()
    assert "reference_accuracy" in results["diagnostics"]


def test_rerun_skips_and_changed_input_reruns(recipe):
    folder, _ = recipe
    config = folder / "recipe.yaml"
    again = ftft(["run", config])
    assert again.returncode == 0, tail(again)
    assert again.stdout.count("done before, skipped") == 6 and "running" not in again.stdout

    changed = ftft(["run", config, "--set", "selection.fraction=0.5"])
    assert changed.returncode == 0, tail(changed)
    lines = changed.stdout.splitlines()
    reran = {line.split(":")[0].split("] ")[1] for line in lines if line.endswith("running ...")}
    assert reran == {"select/small", "main/ftft/seed0", "main/ftft/seed1"}
    assert read(folder / "out" / "main" / "ftft" / "seed0" / "metrics.json")["train_rows"] == 60


def test_bad_recipe_is_one_line(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "methods": ["erm", "magic"]}))
    proc = ftft(["run", config])
    assert proc.returncode == 2 and "methods must be some of" in proc.stderr
