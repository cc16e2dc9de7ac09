"""`ftft run`: the recipe's table, its cost accounting, and skipping or re-running stages."""

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from ftft_ds.config import MainConfig, from_dict, load_config
from ftft_ds.errors import FtftError
from ftft_ds.io import own_output_dir
from ftft_ds.pipeline import RecipeConfig
from ftft_ds.pipeline.report import compare, comparison_line, markdown_table, summarize
from ftft_ds.pipeline.stages import Stage

from .helpers import (
    REPO,
    in_process,
    processes_mentioning,
    quiet_env,
    ran_in_process,
    refused_in_process,
    save_tiny_decoder,
)

pytestmark = pytest.mark.xdist_group("test_pipeline")  # its module fixtures are built once, on one worker

RECIPE = {
    "data": {"embedded_train_size": 120},
    "main": {"model": "tiny-bert", "micro_batch_size": 8, "lr": 1.0e-3, "erm_epochs": 4, "log_every": 5},
    "reference": {"model": "tiny-bert", "num_layers": 1, "epochs": 1, "micro_batch_size": 8, "lr": 1.0e-3},
    "methods": ["erm", "ftft"],
    "seeds": [0, 1],
    "early_stopping": {"evals": 4},
    "reference_gate": "warn",  # a 1-epoch reference of 120 rows is weak; the gate's refusal is tested on its own
    "num_ranks": 1,
}
"""A reference of about an eighth of ERM's cost (half the layers, a quarter of the epochs), so the
default cost target (0.5) leaves FTFT's main run room for its 4 evaluations."""
ALL_METHODS = ["erm", "erm_es", "dm", "random", "ftft"]


def read(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """Every method on one seed, run with paths relative to the recipe's folder (so that a copy of
    the folder is the same recipe, done)."""
    folder = tmp_path_factory.mktemp("recipe")
    config = folder / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "methods": ALL_METHODS, "seeds": [0], "output_dir": "out"}))
    with contextlib.chdir(folder):
        return folder, ran_in_process(["run", config])


def test_table_structure_and_costs_add_up(recipe):
    folder, proc = recipe
    out = folder / "out"
    results = read(out / "results.json")
    assert [s["method"] for s in results["summary"]] == ALL_METHODS
    assert {(r["method"], r["seed"]) for r in results["rows"]} == {(m, 0) for m in ALL_METHODS}
    rows = {r["method"]: r for r in results["rows"]}
    erm_flops = read(out / "main" / "erm" / "seed0" / "cost.json")["train_flops"]
    reference_flops = {name: read(out / "reference" / name / "cost.json")["train_flops"] for name in ("small", "main")}
    erm_cost = read(out / "main" / "erm" / "seed0" / "cost.json")
    for method, row in rows.items():
        main = read(out / "main" / method / "seed0" / "cost.json")
        reference = {"ftft": "small", "dm": "main"}.get(method)
        ref = read(out / "reference" / reference / "cost.json") if reference else {}
        assert row["relative_cost"] == pytest.approx(
            100 * (main["train_flops"] + ref.get("train_flops", 0.0)) / erm_cost["train_flops"]
        )
        # All FLOPs: evaluation forward passes (2 x parameters x tokens) on top of training. The cost
        # counts the evaluations that steer a run, not the closing report of every split: ERM's
        # one evaluation reports; an early-stopping run's evaluations while training choose its checkpoint.
        assert (
            main["total_flops"]
            == pytest.approx(main["train_flops"] + 2 * main["flops_parameters"] * main["eval_tokens"])
            and main["eval_tokens"] > main["report_tokens"] > 0
        ) or (method in ("erm", "dm") and main["eval_tokens"] == main["report_tokens"] > 0)
        assert main["cost_flops"] == pytest.approx(
            main["total_flops"] - 2 * main["flops_parameters"] * main["report_tokens"]
        )
        assert row["relative_total_flops"] == pytest.approx(
            100 * (main["cost_flops"] + ref.get("cost_flops", 0.0)) / erm_cost["cost_flops"]
        )
        # Wall time: each run's whole wall time, set-up and evaluations included, not just its loop.
        assert main["run_seconds"] > main["wall_seconds"] > 0
        assert row["relative_wall_time"] == pytest.approx(
            100 * (main["run_seconds"] + ref.get("run_seconds", 0.0)) / erm_cost["run_seconds"]
        )
    subset_rows = round(0.33 * 120)
    assert {m: r["train_rows"] for m, r in rows.items()} == {
        "erm": 120,
        "erm_es": 120,
        "dm": subset_rows,
        "random": subset_rows,
        "ftft": subset_rows,
    }
    # erm and dm train their whole budget; the early-stopping methods share FTFT's cap, which the
    # cost target planned, evaluate 4 times up to it on the OOD validation split, keep the best
    # evaluation, and stop at the cap within their FLOPs ceiling.
    full = read(out / "main" / "erm" / "seed0" / "metrics.json")["steps"]
    assert rows["erm"]["steps"] == full and rows["erm"]["stopped"] == "budget"
    plan = results["plan"]
    ftft_plan = next(m for m in plan["methods"] if m["method"] == "ftft")["main"]
    assert ftft_plan["eval_every"] == math.ceil(ftft_plan["steps"] / 4) and ftft_plan["steps"] < full
    for method in ("erm_es", "random", "ftft"):
        run = read(out / "main" / method / "seed0" / "run_config.json")
        assert run["patience_metric"] == "ood_dev/accuracy" and run["evals_per_schedule"] == 0
        assert (run["budget"], run["eval_every"]) == (f"steps:{ftft_plan['steps']}", ftft_plan["eval_every"])
        assert rows[method]["steps"] == ftft_plan["steps"]
        main = read(out / "main" / method / "seed0" / "cost.json")
        assert main["cost_flops"] <= run["max_flops"] and rows[method]["relative_total_flops"] <= 50
        # No patience under a target: they run to the cap, so the plan is what they spend, give or take
        # the draw of long and short rows in the last epoch.
        assert run["patience"] is None and run["select_best"] and rows[method]["stopped"] == "budget"
        assert rows[method]["relative_total_flops"] == pytest.approx(
            rows[method]["planned_relative_total_flops"], abs=1.0
        )
    # DM's reference is the main model itself, trained like ERM while it records its dynamics.
    dm_reference = read(out / "reference" / "main" / "run_config.json")
    assert dm_reference["model"] == "tiny-bert" and dm_reference["epochs"] == 4 and dm_reference["num_layers"] is None
    # The random baseline's subset: the fraction, stratified or not, from no dynamics at all.
    assert len(json.loads((out / "select" / "random" / "subset.json").read_text())["uids"]) == subset_rows
    table = (out / "results.md").read_text()
    for method in ALL_METHODS:  # a tiny model may learn no more than one class: the table says so
        one_class = " (predicts one class: 1 of 1 seeds)" if rows[method]["one_class"] else ""
        assert f"| {method}{one_class} | 1 |" in table and f"| {method}{one_class} | 1 |" in proc.stdout
    assert "ood/accuracy" in table
    assert (out / "cost_vs_ood.png").is_file() and (out / "select" / "small" / "data_map.png").is_file()
    assert [v["reference"] for v in results["gate"]["verdicts"]] == ["small", "main"] and "## Reference gate" in table
    # The subsets' overlaps, beside two random subsets' expected overlap, 0.33 / 1.67.
    overlaps = results["gate"]["subset_overlap"]
    assert set(overlaps) == {"main~small", "random~small", "main~random"}
    for pair, value in overlaps.items():
        assert f"- subset overlap {pair}: Jaccard {value:.2f} (two random subsets: 0.20)" in table
    for method in ("erm_es", "dm", "random", "ftft"):
        assert f"{method} vs erm: ood/accuracy" in table and "with one seed" in table
    assert table.index("ftft vs erm") > table.index("random vs erm")  # the verdict comes last
    assert proc.stdout.count("cost plan (cost_target 0.5") == 3  # forecast, with the reference measured, results
    comparison = next(c for c in results["comparisons"] if c["method"] == "ftft" and c["baseline"] == "erm")
    assert comparison["seeds"] == [0] and comparison["ci95"] is None
    assert "ftft vs erm_es: ood/accuracy" in table  # ERM cut at FTFT's cap: did the subset earn it?
    # The plan counted what the cost ledgers then counted: ERM to the token (its 4 whole epochs pad
    # no row on one rank), the reference as measured.
    assert plan["erm"]["train"] == pytest.approx(erm_flops, rel=1e-9)
    assert plan["erm"]["total"] == pytest.approx(erm_cost["cost_flops"], rel=1e-9) == erm_flops
    assert ftft_plan["max_flops"] == pytest.approx(
        0.5 * erm_cost["cost_flops"] - read(out / "reference" / "small" / "cost.json")["cost_flops"]
    )
    assert reference_flops["small"] < 0.15 * erm_flops
    # TensorBoard's hparams view: one run per (method, seed) with its metrics and cost.
    for method, row in rows.items():
        events = EventAccumulator(str(out / "tensorboard" / "results" / f"{method}-seed0")).Reload()
        assert events.Scalars("hparam/relative_cost")[0].value == pytest.approx(row["relative_cost"], rel=1e-6)
        assert events.Scalars("hparam/ood/accuracy")[0].value == pytest.approx(row["ood/accuracy"], rel=1e-6)
        start = plugin_data_pb2.HParamsPluginData.FromString(
            events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        ).session_start_info
        assert start.hparams["method"].string_value == method and start.hparams["seed"].number_value == 0


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(
        yaml.safe_dump({**RECIPE, "methods": ["erm", "erm_es", "ftft"], "output_dir": str(tmp_path / "out")})
    )
    result = in_process(["run", config, "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("cost plan (cost_target 0.5: every early-stopping method's FLOPs with evaluations")
    erm, erm_es, ftft = (next(line for line in lines if line.startswith(f"| {m} |")) for m in ("erm", "erm_es", "ftft"))
    assert erm == "| erm | – | 60 steps | at the end only | 100.0 | 100.0 | 0.0 |"
    assert ftft.startswith("| ftft | 1") and "(forecast)" in ftft and "4, every" in ftft
    cap = ftft.split(" | ")[2]
    assert cap.startswith("≤ ") and erm_es.split(" | ")[2] == cap  # one cap for every early-stopping method
    assert float(ftft.split(" | ")[5].removeprefix("≤ ")) <= 50.0
    assert not (tmp_path / "out").exists()


def test_a_reference_that_leaves_no_room_under_the_target_is_refused_before_anything_trains(tmp_path):
    config = tmp_path / "recipe.yaml"
    # A reference as big as the main model, trained as long: alone it costs ERM's whole training.
    expensive = {**RECIPE, "reference": {"model": "tiny-bert", "epochs": 4, "micro_batch_size": 8}}
    config.write_text(yaml.safe_dump({**expensive, "output_dir": str(tmp_path / "out")}))
    errors = refused_in_process(["run", config, "--dry-run"])
    assert len(errors) == 1 and errors[0].startswith(
        "error: cost_target 0.5 leaves ftft's main run no room: its reference costs 101.4% of ERM's FLOPs with "
        "evaluations"
    )
    assert "use a cheaper reference, a higher cost_target" in errors[0]
    no_target = in_process(["run", config, "--dry-run", "--set", "cost_target=null"])
    assert no_target.exit_code == 0, no_target.output
    assert "cost plan (no cost_target" in no_target.output
    assert "warning: FTFT cannot come in under ERM: its reference alone costs 100% of ERM" in no_target.output
    assert not (tmp_path / "out").exists()


def test_a_cost_target_of_0_4_holds_for_every_early_stopping_method(tmp_path):
    """`--cost-target 0.4`: every early-stopping method, its reference included, spends at most 40% of
    ERM's FLOPs with evaluations, as the table and results.json say (a schedule squeezed into the
    cap: at 40% the cap would end inside the ERM schedule's warm-up)."""
    config = tmp_path / "recipe.yaml"
    methods = ["erm", "erm_es", "random", "ftft"]
    config.write_text(yaml.safe_dump({**RECIPE, "methods": methods, "seeds": [0], "output_dir": str(tmp_path / "o")}))
    proc = ran_in_process(["run", config, "--cost-target", "0.4", "--set", "main.lr_schedule=compressed"])
    results = read(tmp_path / "o" / "results.json")
    assert results["plan"]["target"] == 0.4 and "cost plan (cost_target 0.4" in proc.stdout
    for row in results["rows"]:
        assert row["relative_total_flops"] <= 40.0 or row["method"] == "erm", row
    assert all(c["relative_total_flops"] <= 40.0 for c in results["comparisons"])
    summary = {entry["method"]: entry for entry in results["summary"]}
    assert all(summary[m]["relative_total_flops"]["mean"] <= 40.0 for m in ("erm_es", "random", "ftft"))


def test_the_recipe_runs_with_lora_main_runs_and_plans_their_cost(tmp_path):
    """`main.lora`: ERM and FTFT both train adapters on a frozen backbone; the plan counts LoRA's
    FLOPs (no weight gradients for frozen weights), so what FTFT spends is what was planned."""
    config = tmp_path / "recipe.yaml"
    main = {**RECIPE["main"], "lr": 1.0e-2, "lora": {"r": 4}}
    config.write_text(yaml.safe_dump({**RECIPE, "main": main, "seeds": [0], "output_dir": str(tmp_path / "out")}))
    ran_in_process(["run", config])
    results = read(tmp_path / "out" / "results.json")
    for method in ("erm", "ftft"):
        cost = read(tmp_path / "out" / "main" / method / "seed0" / "cost.json")
        assert 0 < cost["trainable_flops_parameters"] < cost["flops_parameters"]
        assert (tmp_path / "out" / "main" / method / "seed0" / "model" / "adapter_config.json").is_file()
    ftft = next(row for row in results["rows"] if row["method"] == "ftft")
    assert ftft["relative_total_flops"] <= 50
    assert ftft["relative_total_flops"] == pytest.approx(ftft["planned_relative_total_flops"], abs=1.0)


@pytest.mark.parametrize("target", [0, 1.5, True, "half"])
def test_a_cost_target_is_a_share_of_erm(target):
    with pytest.raises(FtftError, match="cost_target must be"):
        from_dict(RecipeConfig, {**RECIPE, "cost_target": target})


def test_a_cost_target_needs_budgets_known_in_advance():
    with pytest.raises(FtftError, match="ftft_budget seconds:60 is not a number of steps known in advance"):
        from_dict(RecipeConfig, {**RECIPE, "ftft_budget": "seconds:60"})
    assert from_dict(RecipeConfig, {**RECIPE, "ftft_budget": "seconds:60", "cost_target": None}).cost_target is None


def _rows(method, values, cost):
    return [
        {
            "method": method,
            "seed": seed,
            "ood/accuracy": value,
            "relative_cost": cost,
            "relative_total_flops": cost + 5,
            "relative_wall_time": 2 * cost,
            "planned_relative_cost": cost - 2,
            "planned_relative_total_flops": cost + 8,
            "wall_seconds": 1.0,
            "steps": 10,
        }
        for seed, value in enumerate(values)
    ]


def test_table_with_one_seed_shows_no_spread():
    rows = _rows("erm", [0.40], 100.0) + _rows("ftft", [0.45], 40.0)
    table = markdown_table(summarize(rows, ["erm", "ftft"], ["ood/accuracy"]), ["ood/accuracy"])
    assert table.startswith(
        "| method | seeds | ood/accuracy | training FLOPs (ERM=100) | planned | FLOPs with evaluations (ERM=100) "
        "| planned | wall time (ERM=100) | steps | wall s |"
    )
    assert "±" not in table and "| ftft | 1 | 45.0 | 40.0 | 38.0 | 45.0 | 48.0 | 80.0 | 10 | 1 |" in table
    line = comparison_line(compare(rows, "ftft", "ood/accuracy"))
    assert line == (
        "ftft vs erm: ood/accuracy 45.0 vs 40.0 (+5.0 points with one seed: run more seeds before "
        "trusting a difference) at 40% of erm's training FLOPs (45% of its FLOPs with evaluations, 80% of its "
        "wall time): ftft matches or beats erm at no more than half of erm's training FLOPs."
    )
    # With a cost target the verdict follows FLOPs with evaluations, reference included.
    assert comparison_line(compare(rows, "ftft", "ood/accuracy"), target=0.4).endswith(
        "ftft matches or beats erm but over its cost target (40% of erm's FLOPs with evaluations)."
    )
    assert comparison_line(compare(rows, "ftft", "ood/accuracy"), target=0.5).endswith(
        "ftft matches or beats erm within its cost target (50% of erm's FLOPs with evaluations)."
    )


def test_a_model_that_predicts_one_class_is_flagged_and_compared_with_nothing():
    rows = _rows("erm", [0.333, 0.61], 100.0) + _rows("ftft", [0.333, 0.66], 40.0)
    rows[0]["one_class"] = rows[2]["one_class"] = True  # seed 0: both say one class everywhere
    table = markdown_table(summarize(rows, ["erm", "ftft"], ["ood/accuracy"]), ["ood/accuracy"])
    assert "| erm (predicts one class: 1 of 2 seeds) | 2 |" in table
    line = comparison_line(compare(rows, "ftft", "ood/accuracy"), target=0.5)
    assert line.endswith(
        "no verdict: ftft predicts a single class on seed(s) 0 and erm predicts a single class on seed(s) 0, so "
        "it learnt nothing there to compare; give it more to learn from (a learning rate that fits the model, more "
        "epochs, more training data)."
    )


def test_the_verdict_names_a_weak_reference_and_the_fair_baseline():
    rows = _rows("erm_es", [0.40, 0.41], 45.0) + _rows("ftft", [0.46, 0.47], 45.0)
    fair = comparison_line(compare(rows, "ftft", "ood/accuracy", baseline="erm_es"), target=0.5)
    assert fair.startswith("ftft vs erm_es: ood/accuracy 46.5 vs 40.5") and fair.endswith(
        "the subset, not the shorter run, earned ftft's result."
    )
    # An interval that holds zero is no win: the verdict says the seeds cannot tell them apart.
    rows = _rows("erm_es", [0.40, 0.41], 45.0) + _rows("ftft", [0.45, 0.47], 45.0)
    tied = comparison_line(compare(rows, "ftft", "ood/accuracy", baseline="erm_es"), target=0.5)
    assert tied.endswith(
        "95% CI [-0.9, +11.9] over 2 seeds) at 45% of erm's training FLOPs (50% of its FLOPs with "
        "evaluations, 90% of its wall time): these seeds cannot tell the subset's effect from the "
        "shorter run's."
    )
    rows = _rows("erm", [0.40, 0.41], 100.0) + _rows("ftft", [0.45, 0.47], 45.0)
    weak = comparison_line(compare(rows, "ftft", "ood/accuracy"), 0.5, "reference 'small': WEAK, ...")
    assert weak.endswith("; its subset came from a reference the gate found weak (reference 'small': WEAK, ...).")


def test_table_with_several_seeds_shows_spread_and_a_paired_interval():
    rows = _rows("erm", [0.40, 0.42, 0.44], 100.0) + _rows("ftft", [0.41, 0.45, 0.44], 60.0)
    table = markdown_table(summarize(rows, ["erm", "ftft"], ["ood/accuracy"]), ["ood/accuracy"])
    assert "| erm | 3 | 42.0 ± 2.0 |" in table
    comparison = compare(rows, "ftft", "ood/accuracy")
    assert comparison["differences"] == pytest.approx([0.01, 0.03, 0.0])
    half = 4.302653 * np.std([0.01, 0.03, 0.0], ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
    assert comparison["ci95"] == pytest.approx([0.01333 - half, 0.01333 + half], abs=1e-4)
    assert comparison_line(comparison).endswith(
        "at 60% of erm's training FLOPs (65% of its FLOPs with evaluations, 120% of its wall time): these seeds "
        "cannot tell ftft from erm; it runs at more than half of erm's training FLOPs."
    )


def test_rerun_skips_and_changed_input_reruns(recipe, tmp_path, monkeypatch):
    """On a copy of the finished recipe (the fixture stays as it was for the other tests)."""
    copy = tmp_path / "copy"
    shutil.copytree(recipe[0], copy)
    monkeypatch.chdir(copy)
    again = in_process(["run", "recipe.yaml"])  # nothing to train: no process needed
    assert again.exit_code == 0, again.output
    assert again.output.count("done before, skipped") == 10 and "running" not in again.output

    changed = ran_in_process(["run", "recipe.yaml", "--set", "selection.fraction=0.5"])
    lines = changed.stdout.splitlines()
    reran = {line.split(":")[0].split("] ")[1] for line in lines if line.endswith("running ...")}
    # ERM cut at FTFT's cap re-runs when FTFT's new subset moved that cap, and only then.
    erm_es = [
        read(folder / "out" / "main" / "erm_es" / "seed0" / "run_config.json")["budget"] for folder in (copy, recipe[0])
    ]
    assert ("main/erm_es/seed0" in reran) == (erm_es[0] != erm_es[1])
    assert reran - {"main/erm_es/seed0"} == {
        "select/small",
        "select/main",
        "select/random",
        "main/dm/seed0",
        "main/random/seed0",
        "main/ftft/seed0",
    }
    assert read(copy / "out" / "main" / "ftft" / "seed0" / "metrics.json")["train_rows"] == 60
    assert read(recipe[0] / "out" / "main" / "ftft" / "seed0" / "metrics.json")["train_rows"] == 40


def test_bad_recipe_is_one_line(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "methods": ["erm", "magic"]}))
    assert "methods must be some of" in refused_in_process(["run", config])[-1]


def test_a_missing_data_folder_is_named_before_anything_else(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "data": {"source": str(tmp_path / "nowhere")}}))
    assert refused_in_process(["run", config, "--dry-run"]) == [
        f"error: data source {str(tmp_path / 'nowhere')!r} does not exist (expected a file or folder)"
    ]


@pytest.mark.parametrize("seeds", [[1.5], [True], ["a"], 3, [0, 0], []])
def test_seeds_must_be_distinct_integers(seeds):
    with pytest.raises(FtftError, match="seeds must be a non-empty list of distinct integers"):
        from_dict(RecipeConfig, {**RECIPE, "seeds": seeds})


@pytest.mark.parametrize(
    "field, value",
    [
        ("init_seed", 3),
        ("data_seed", 3),
        ("dropout_seed", 3),
        ("budget", "erm:1"),
        ("patience", 2),
        ("evals_per_schedule", 12),
        ("output_dir", "x"),
    ],
)
def test_a_main_field_the_recipe_owns_is_refused_not_overwritten(field, value):
    with pytest.raises(
        FtftError,
        match=rf"^main\.{field} is set by the recipe for every run it starts; "
        rf"remove it from main$",
    ):
        from_dict(RecipeConfig, {**RECIPE, "main": {**RECIPE["main"], field: value}})


def test_an_owned_field_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(RECIPE))
    assert refused_in_process(["run", config, "--dry-run", "--set", "main.init_seed=7"]) == [
        "error: main.init_seed is set by the recipe for every run it starts; remove it from main"
    ]


def test_a_boolean_is_never_a_number():
    with pytest.raises(FtftError, match="option lr must be a float, got True"):
        load_config(MainConfig, None, ["lr=yes"])


@pytest.mark.launcher
def test_dms_reference_is_the_main_model_on_the_main_runs_ranks(tmp_path):
    """DM's reference trains the main model itself: on one rank it would not fit where the main
    model needs ZeRO across GPUs, so it runs on `num_ranks` as the main runs do."""
    out = tmp_path / "out"
    recipe = {**RECIPE, "output_dir": str(out), "methods": ["dm"], "seeds": [0], "num_ranks": 2}
    recipe["main"] = {**RECIPE["main"], "erm_epochs": 1}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    ran_in_process(["run", tmp_path / "recipe.yaml"])
    assert read(out / "reference" / "main" / "cost.json")["world_size"] == 2
    assert read(out / "main" / "dm" / "seed0" / "cost.json")["world_size"] == 2


def start_run(recipe):
    """`ftft run RECIPE` in the background, in a session of its own (a signal can then reach it alone)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ftft_ds", "run", str(recipe)],
        cwd=REPO,
        env=quiet_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.launcher
def test_ctrl_c_to_ftft_run_alone_stops_its_training_processes(tmp_path):
    """Ctrl-C, schedulers and `kill PID` signal the ftft process, not its group: no launcher or rank
    may outlive it (SIGTERM to `ftft sweep` is tested with the sweep, and to SLURM jobs there)."""
    out = tmp_path / "out"
    recipe = {
        **RECIPE,
        "output_dir": str(out),
        "methods": ["erm"],
        "seeds": [0],
        "num_ranks": 2,
        "data": {"embedded_train_size": 3000},
        "main": {**RECIPE["main"], "erm_epochs": 20},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    victim = start_run(tmp_path / "recipe.yaml")
    try:
        log = out / "main" / "erm" / "seed0" / "log.jsonl"  # written once the ranks train
        deadline = time.time() + 300
        while time.time() < deadline and not log.is_file():
            time.sleep(0.2)
        assert log.is_file(), "training never started"
        assert len(processes_mentioning(str(out))) >= 3  # launcher(s) and two ranks
        os.kill(victim.pid, signal.SIGINT)
        assert victim.wait(timeout=60) == 1  # click's answer to KeyboardInterrupt: "Aborted!", exit 1
        assert processes_mentioning(str(out)) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)


INTERRUPTED = {
    "main/erm/seed0": {
        "methods": ["erm"],
        "main": {**RECIPE["main"], "erm_epochs": 40, "log_every": 1, "checkpoint_every": 5},
    },
    "reference/small": {
        "methods": ["ftft"],
        "main": {**RECIPE["main"], "erm_epochs": 12},  # room under the cost target for a 2-epoch reference
        "reference": {**RECIPE["reference"], "epochs": 2, "log_every": 1, "checkpoint_every": 5},
    },
}
"""Recipes whose named stage trains for long enough to be interrupted after its first checkpoint."""


@pytest.mark.launcher
@pytest.mark.parametrize("stage", INTERRUPTED)
def test_a_re_run_continues_an_interrupted_run_from_its_checkpoint(tmp_path, stage):
    """Ctrl-C to `ftft run` mid main run (or mid reference), after a checkpoint; the same command
    again continues the run from that checkpoint instead of deleting its folder: the steps before it
    are not trained twice."""
    out = tmp_path / "out"
    recipe = {
        **RECIPE,
        "output_dir": str(out),
        "seeds": [0],
        "data": {"embedded_train_size": 400},
        **INTERRUPTED[stage],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    first = start_run(tmp_path / "recipe.yaml")
    folder = out / stage
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (folder / "checkpoints" / "latest").is_file():
            time.sleep(0.2)
        assert (folder / "checkpoints" / "latest").is_file(), "no checkpoint was written"
        os.kill(first.pid, signal.SIGINT)
        assert first.wait(timeout=60) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    checkpoint = int((folder / "checkpoints" / "latest").read_text().strip().removeprefix("step_"))
    second = ran_in_process(["run", tmp_path / "recipe.yaml"])
    assert f"{stage}: continues from its last checkpoint" in second.stdout
    assert read(folder / "run_config.json")["resume"] is True
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    logged = [record["step"] for record in records if "train/loss" in record]
    steps = read(folder / "cost.json")["optimizer_steps"]
    assert logged == list(range(1, steps + 1))  # every step once, the first run's kept
    # The second run trained only the steps after the checkpoint: its own progress bar starts there.
    assert f"{checkpoint}/{steps}" in (folder / "log.txt").read_text()


def test_a_stage_being_written_by_a_live_run_is_never_deleted(tmp_path):
    """An orphan from an earlier `ftft run` may still hold a stage's folder: re-running must not delete it."""
    folder = tmp_path / "main" / "erm" / "seed0"
    ran = []
    stage = Stage("main/erm/seed0", folder, {"v": 1}, lambda f: ran.append(f), outputs=())
    with own_output_dir(folder, resume=False, overwrite=False):
        (folder / "log.jsonl").write_text("being written\n")
        with pytest.raises(
            FtftError,
            match=f"stage main/erm/seed0 cannot re-run: {folder} is still being written by process {os.getpid()} on",
        ):
            stage.execute()
        assert (folder / "log.jsonl").is_file() and not ran
    assert stage.execute()[0] and ran == [folder]  # once the run is gone, the stage re-runs


def test_demo_at_a_tiny_size_prints_its_table_and_verdict(tmp_path):
    """`ftft demo` end to end, its recipe shrunk by --set: reference, selection, ERM and FTFT."""
    out = tmp_path / "demo"
    proc = ran_in_process(
        [
            "demo",
            "-o",
            out,
            "--set",
            "data.embedded_train_size=120",
            "--set",
            "main.model=tiny-bert",
            "--set",
            "reference.num_layers=1",
            "--set",
            "reference.epochs=1",
            "--set",
            "main.erm_epochs=4",
            "--set",
            "early_stopping.evals=2",
            "--set",
            "reference_gate=warn",
            "--set",
            "num_ranks=1",
        ]
    )
    assert "cost plan (cost_target 0.5" in proc.stdout and "| erm" in proc.stdout and "| ftft" in proc.stdout
    verdict = [line for line in proc.stdout.splitlines() if line.startswith("ftft vs erm: ood/accuracy")]
    assert len(verdict) == 1 and "of erm's training FLOPs" in verdict[0] and "of its wall time" in verdict[0]
    assert (out / "results.md").is_file() and (out / "cost_vs_ood.png").is_file()


def test_the_default_reference_is_the_main_model_cut_to_cost_at_most_a_tenth_of_erm(tmp_path):
    """Unset, FTFT's reference is the main model's first 2 layers, or 1 where 2 would cost over 10%
    of ERM: 1 of MiniLM's 6 (as low as its layers go), 2 of a 24-layer model's."""
    from ftft_ds.data.load import DataConfig, load_split
    from ftft_ds.pipeline.cost_plan import default_reference, flops_parameters

    split = {"train": load_split(DataConfig(embedded_train_size=120), "train")}
    shallow = from_dict(RecipeConfig, {"data": {"embedded_train_size": 120}, "main": {"model": "minilm"}})
    assert shallow.reference is None
    reference, share = default_reference(shallow, split)
    assert (reference.model, reference.num_layers, reference.epochs) == ("minilm", 1, 3)
    # 3 reference epochs against ERM's 3, every row: the share is the parameters' ratio.
    ratio = flops_parameters(reference, 3)[0] / flops_parameters(shallow.main, 3)[0]
    assert share == pytest.approx(100 * ratio, rel=1e-6) and 10 < share < 25

    deep_model = save_tiny_decoder("llama", tmp_path / "deep", num_layers=24)
    deep = from_dict(
        RecipeConfig,
        {"data": {"embedded_train_size": 120}, "main": {"model": str(deep_model), "lr": 1e-4, "max_length": 32}},
    )
    reference, share = default_reference(deep, split)
    assert (reference.model, reference.num_layers, reference.max_length, reference.lr) == (str(deep_model), 2, 32, 1e-4)
    assert share <= 10


@pytest.mark.parametrize("epochs, warned", [(3, True), (1, False)])
def test_without_a_target_the_plan_warns_of_a_reference_over_a_quarter_of_erm(tmp_path, epochs, warned):
    """tiny-bert's first layer against its two, for 3 epochs against ERM's 3: about 60% of ERM;
    for 1 epoch, about 20%. (With a target, the plan refuses what does not fit instead.)"""
    config = tmp_path / "recipe.yaml"
    recipe = {
        **RECIPE,
        "main": {**RECIPE["main"], "erm_epochs": 3},
        "reference": {"model": "tiny-bert", "num_layers": 1, "epochs": epochs},
        "cost_target": None,
        "output_dir": str(tmp_path / "o"),
    }
    config.write_text(yaml.safe_dump(recipe))
    result = in_process(["run", config, "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "more than a quarter" in line]
    assert bool(lines) == warned
    if warned:
        assert (
            lines[0].startswith("warning: FTFT's reference alone costs ")
            and "% of ERM, more than a quarter" in lines[0]
        )


def test_early_stopping_on_id_dev_is_said_before_training(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **RECIPE,
                "data": {"embedded_train_size": 120, "eval_splits": ["dev", "ood"]},
                "methods": ["erm", "ftft"],
                "output_dir": str(tmp_path / "o"),
            }
        )
    )
    result = in_process(["run", config, "--dry-run"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "early stopping follows" in line]
    assert len(warning) == 1 and warning[0].startswith(
        "warning: early stopping follows dev/accuracy, an in-distribution split: the task has no OOD validation"
    )
    assert "data.validation_holdout: ood:0.3 holds out 30% of 'ood' for validation" in warning[0]
    config.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(tmp_path / "o")}))  # with ood_dev
    assert "early stopping follows" not in in_process(["run", config, "--dry-run"]).output
