"""The core in-process, without the launcher: the stop rule, the cost ledger, and the trainer in a
world of one (gloo, tiny BERT), trained, checked on disk, resumed, and counted step by step."""

import dataclasses
import json
import math

import pytest
import torch

from ftft_ds.config import MainConfig, load_config
from ftft_ds.errors import FtftError
from ftft_ds.runs.main import run_main
from ftft_ds.train.budget import Budget
from ftft_ds.train.cost import CostLedger, CostTotals
from ftft_ds.train.models import build_model
from ftft_ds.train.stop import Divergence, FlopsCeiling, Patience, StopReason, StopRule, running_best
from ftft_ds.train.trainer import TrainState

pytestmark = pytest.mark.xdist_group("test_core")  # its module fixtures are built once, on one worker

# -- the stop rule -------------------------------------------------------------------------------


def test_a_step_budget_stops_exactly_at_its_last_step():
    rule = StopRule(Budget.parse("steps:3"), 3)
    assert [rule.after_step(step, CostTotals()) for step in (1, 2, 3)] == [None, None, StopReason.BUDGET]


def test_flops_and_time_budgets_read_the_ledger_totals():
    flops = StopRule(Budget.parse("flops:1e6"), None)
    assert flops.after_step(5, CostTotals(train_tokens=1000, flops_parameters=100)) is None  # 6e5 FLOPs
    assert flops.after_step(6, CostTotals(train_tokens=2000, flops_parameters=100)) is StopReason.BUDGET
    seconds = StopRule(Budget.parse("seconds:2"), None)
    assert seconds.after_step(1, CostTotals(wall_seconds=1.5)) is None
    assert seconds.after_step(2, CostTotals(wall_seconds=2.0)) is StopReason.BUDGET


def test_patience_keeps_the_best_and_stops_after_evals_without_improvement():
    rule = StopRule(Budget.parse("steps:100"), 100, patience=Patience("dev/accuracy", 2))
    state = TrainState()
    decisions = []
    for step, score in ((10, 0.5), (20, 0.7), (30, 0.7), (40, 0.6)):
        state.step = step
        decisions.append(rule.after_eval(state, {"dev/accuracy": score}))
    assert decisions == [None, None, None, StopReason.PATIENCE]
    assert (state.best_score, state.best_step, state.evals_since_best) == (0.7, 20, 2)


def test_divergence_only_counts_after_warm_up_and_comes_before_patience():
    rule = StopRule(
        Budget.parse("steps:100"),
        100,
        patience=Patience("dev/accuracy", 1),
        divergence=Divergence("dev/accuracy", threshold=0.4, after_step=10),
    )
    state = TrainState(step=5)
    assert rule.after_eval(state, {"dev/accuracy": 0.34}) is None  # still warming up
    state.step = 20
    assert rule.after_eval(state, {"dev/accuracy": 0.34}) is StopReason.DIVERGED


def test_a_flops_ceiling_keeps_room_for_a_step_and_the_evaluations_after_it():
    ceiling = FlopsCeiling(limit=800.0, step_flops=100.0, eval_flops=50.0)
    assert ceiling.reserve == 200.0 and ceiling.allows(600.0) and not ceiling.allows(600.5)
    rule = StopRule(Budget.parse("steps:100"), 100, ceiling=ceiling)
    assert rule.after_step(5, CostTotals(train_tokens=1000, flops_parameters=0)) is None
    assert rule.after_step(6, CostTotals(train_tokens=101, flops_parameters=1)) is StopReason.BUDGET  # 606 spent


def test_running_best_is_the_best_so_far_either_way():
    assert running_best([0.2, 0.5, 0.4, 0.6]) == [0.2, 0.5, 0.5, 0.6]
    assert running_best([3.0, 2.0, 2.5], greater_is_better=False) == [3.0, 2.0, 2.0]


# -- a world of one --------------------------------------------------------------------------------


def test_the_ledger_sums_a_micro_batch_and_restores_its_totals(world):
    ledger = CostLedger(flops_parameters=1000, world_size=1, device=world.device)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    ledger.count_train(mask, torch.tensor(0.5), torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
    record = ledger.flush(step=1, lr=1e-3)
    assert (ledger.totals.train_tokens, ledger.totals.train_examples, ledger.totals.optimizer_steps) == (5, 2, 1)
    assert ledger.totals.train_flops == 6 * 1000 * 5
    assert record["train/accuracy"] == 0.5 and record["train/loss"] == pytest.approx(0.5)
    restored = CostLedger(flops_parameters=1000, world_size=1, device=world.device)
    saved = ledger.state_dict()
    restored.load_state_dict(saved)
    # Everything carries over; run_seconds holds the saved run's wall time so far, and goes on from it.
    assert dataclasses.replace(restored.totals, run_seconds=0.0) == ledger.totals
    assert 0 < saved["run_seconds"] == restored.totals.run_seconds <= restored.state_dict()["run_seconds"]


def _config(out, **fields):
    return load_config(
        MainConfig,
        None,
        (),
        **{
            "model": "tiny-bert",
            "ds_config": "zero2",
            "micro_batch_size": 8,
            "lr": 1e-3,
            "log_every": 1,
            "erm_epochs": 4,
            "lr_schedule": "truncated",
            "output_dir": str(out),
            "export_model": False,
            "data": {"embedded_train_size": 48, "eval_splits": ["dev"]},
            **fields,
        },
    )


def test_trainer_writes_its_files_and_a_resumed_run_takes_exactly_the_remaining_steps(world, tmp_path):
    out = tmp_path / "run"
    steps_seen = []
    first = run_main(
        _config(out, budget="steps:4", checkpoint_every=2),
        world,
        on_step_end=lambda trainer: steps_seen.append(trainer.state.step),
    )
    assert steps_seen == [1, 2, 3, 4]
    assert first["steps"] == 4 and first["stopped"] == "budget" and first["erm_steps"] == 24
    for name in ("metrics.json", "cost.json", "config.json", "log.jsonl", "checkpoints/latest"):
        assert (out / name).is_file(), name
    assert json.loads((out / "cost.json").read_text())["optimizer_steps"] == 4

    steps_seen.clear()
    resumed = run_main(
        _config(out, budget="steps:7", resume=True),
        world,
        on_step_end=lambda trainer: steps_seen.append(trainer.state.step),
    )
    assert steps_seen == [5, 6, 7]  # exactly the three missing steps, numbered on from the checkpoint
    assert resumed["steps"] == 7 and resumed["stopped"] == "budget"
    cost = json.loads((out / "cost.json").read_text())
    assert cost["optimizer_steps"] == 7 and cost["train_examples"] == 7 * 8
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert [s for s in logged if s <= 7] == logged and sorted(set(logged)) == list(range(1, 8))


def test_a_run_under_max_flops_stops_before_passing_it(world, tmp_path):
    """A 40-step budget that would cost about 5 times the limit: the run stops early, as at its budget,
    and what it spent, training and the evaluations that chose its checkpoint, stays under the limit;
    its closing report of every split is counted apart."""
    out = tmp_path / "run"
    fields = dict(budget="steps:40", select_best=True, patience_metric="dev/accuracy", eval_every=4)
    fields["data"] = {"embedded_train_size": 48, "eval_splits": ["dev", "ood"]}
    unlimited = run_main(_config(tmp_path / "free", **fields), world)
    spent = json.loads((tmp_path / "free" / "cost.json").read_text())["cost_flops"]
    assert unlimited["steps"] == 40
    limit = spent / 5
    limited = run_main(_config(out, max_flops=limit, **fields), world)
    cost = json.loads((out / "cost.json").read_text())
    assert limited["stopped"] == "budget" and 4 < limited["steps"] < 40
    assert cost["cost_flops"] <= limit and cost["total_flops"] > cost["cost_flops"] and cost["report_tokens"] > 0
    # It stopped no more than a step and two evaluations short of the limit: the ceiling's own reserve.
    per_step = cost["train_flops"] / limited["steps"]
    per_eval = (cost["cost_flops"] - cost["train_flops"]) / math.ceil(limited["steps"] / 4)
    assert cost["cost_flops"] > limit - 3 * per_step - 2 * per_eval


def test_max_flops_too_small_for_one_step_is_one_line(world, tmp_path):
    with pytest.raises(FtftError, match=r"^max_flops 1000 leaves no room for one step and its evaluations \("):
        run_main(_config(tmp_path / "run", budget="steps:4", max_flops=1000.0, select_best=True, eval_every=2), world)


def test_evaluations_on_a_fixed_sample_cost_its_tokens_and_the_kept_checkpoint_is_evaluated_in_full(world, tmp_path):
    from ftft_ds.data.load import DataConfig, fixed_sample, load_splits
    from ftft_ds.train.models import load_tokenizer

    out = tmp_path / "run"
    data = {"embedded_train_size": 120, "eval_splits": ["dev", "ood_dev"]}
    fields = dict(budget="steps:6", select_best=True, patience_metric="ood_dev/accuracy", eval_every=3, data=data)
    metrics = run_main(_config(out, eval_sample=7, **fields), world)
    splits = load_splits(DataConfig(**data))
    tokenizer = load_tokenizer("tiny-bert")

    def tokens(split, rows):
        split = splits[split].dataset.select(rows).to_dict()
        encoded = tokenizer(split["text"], split["text_pair"], truncation=True, max_length=64)
        return sum(len(ids) for ids in encoded["input_ids"])

    sample = fixed_sample(splits["ood_dev"].uids(), 7)
    assert len(sample) == 7 and sample == fixed_sample(list(splits["ood_dev"].uids()), 7)
    everything = tokens("dev", range(len(splits["dev"]))) + tokens("ood_dev", range(len(splits["ood_dev"])))
    cost = json.loads((out / "cost.json").read_text())
    assert cost["eval_tokens"] == 2 * tokens("ood_dev", sample) + everything  # steps 3 and 6, then the closing one
    assert cost["report_tokens"] == everything  # the closing one only reports
    assert metrics["stopped"] == "budget" and set(metrics["selected"]) >= {"dev/accuracy", "ood_dev/accuracy"}
    assert metrics["predicted_classes"].keys() == {"dev", "ood_dev"}


def test_fixed_sample_depends_on_the_uids_alone():
    from ftft_ds.data.load import fixed_sample

    uids = [f"u{i}" for i in range(50)]
    sample = fixed_sample(uids, 10)
    shuffled = uids[::-1]
    assert sorted(uids[i] for i in sample) == sorted(shuffled[i] for i in fixed_sample(shuffled, 10))
    assert fixed_sample(uids, None) == fixed_sample(uids, 50) == list(range(50))


def test_checkpoints_come_by_wall_time_at_log_points(world, tmp_path):
    """`checkpoint_minutes` alone (no `checkpoint_every`): once that much training time has passed,
    the next log point saves, so an interrupted run loses no more than that."""
    out = tmp_path / "run"
    seen = {}

    def latest(trainer):
        path = out / "checkpoints" / "latest"
        seen[trainer.state.step] = path.read_text().strip() if path.is_file() else None

    run_main(_config(out, budget="steps:5", log_every=2, checkpoint_minutes=1e-6), world, on_step_end=latest)
    assert seen == {1: None, 2: "step_2", 3: "step_2", 4: "step_4", 5: "step_4"}  # the end saves step_5 after
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_5"
    never = tmp_path / "never"
    run_main(_config(never, budget="steps:3", log_every=1, checkpoint_minutes=None), world)
    assert (never / "checkpoints" / "latest").read_text().strip() == "step_3"  # the final one only


def test_frozen_embeddings_keep_their_initial_values_while_the_layers_above_train(world, tmp_path):
    trained = {}

    def keep_weights(trainer):
        trained.update({name: p.detach().clone() for name, p in trainer.engine.module.named_parameters()})

    run_main(_config(tmp_path / "run", budget="steps:3", freeze_embeddings=True), world, on_step_end=keep_weights)
    initial = dict(build_model("tiny-bert", 3, init_seed=0).named_parameters())
    changed = {name for name, p in initial.items() if not torch.equal(p, trained[name])}
    assert "bert.embeddings.word_embeddings.weight" not in changed
    assert "classifier.weight" in changed and any(".encoder." in name for name in changed)


def test_a_pretrained_model_trains_with_dropout_on_from_its_first_step(world, tmp_path):
    """`from_pretrained` hands back a model in eval mode: without `train()` a run that never
    evaluates would train with dropout off, and one that evaluates would turn it on at its first
    evaluation, so the two would differ for that alone."""
    modes = []
    run_main(
        _config(
            tmp_path / "run", model="minilm", budget="steps:2", data={"embedded_train_size": 48, "eval_splits": []}
        ),
        world,
        on_step_end=lambda trainer: modes.append(
            {m.training for m in trainer.engine.module.modules() if isinstance(m, torch.nn.Dropout)}
        ),
    )
    assert modes == [{True}, {True}]


def test_resuming_with_another_data_order_seed_is_refused(world, tmp_path):
    out = tmp_path / "run"
    run_main(_config(out, budget="steps:2"), world)
    with pytest.raises(Exception, match="data-order seed 0, this run uses 5"):
        run_main(_config(out, budget="steps:3", resume=True, data_seed=5), world)
