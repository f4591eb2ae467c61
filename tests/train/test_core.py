"""The shared loop: schedules, accumulation, NaN handling, optimizer groups."""

from __future__ import annotations

import json

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.train.core import Plan, build_optimizer, lr_factor, train
from lmstack.train.recipe import OptimizerSection, RunSection
from tiny_run import samples, tiny_train


def schedule(kind: str, **settings) -> list[float]:
    optimizer = OptimizerSection(schedule=kind, **settings)
    return [lr_factor(step, 20, optimizer) for step in range(20)]


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_lr_schedules_match_transformers(kind):
    optimization = pytest.importorskip("transformers.optimization")
    reference = {"cosine": optimization.get_cosine_schedule_with_warmup,
                 "linear": optimization.get_linear_schedule_with_warmup,
                 "constant": lambda opt, warmup, total: optimization.get_constant_schedule_with_warmup(opt, warmup)}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = reference[kind](optimizer, 5, 20)
    expected = []
    for _ in range(20):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert schedule(kind, warmup_steps=5) == pytest.approx(expected, abs=1e-12)


def test_lr_schedule_values_by_formula():
    cosine = schedule("cosine", warmup_steps=4, min_lr_ratio=0.1)
    assert cosine[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert cosine[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 8 / 16)).item()))
    assert lr_factor(20, 20, OptimizerSection(schedule="cosine", warmup_steps=4, min_lr_ratio=0.1)) == pytest.approx(0.1)
    assert schedule("linear", warmup_steps=0)[10] == pytest.approx(0.5)


def test_no_weight_decay_on_norms_and_biases():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = build_optimizer(model, OptimizerSection(weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and [p.ndim for p in decayed["params"]] == [2]
    assert plain["weight_decay"] == 0.0 and sorted(p.ndim for p in plain["params"]) == [1, 1, 1]


def test_two_accumulated_batches_of_two_equal_one_batch_of_four(tmp_path):
    accumulated = tiny_train(tmp_path / "accum", steps=3, batch_size=2, grad_accum=2)
    whole = tiny_train(tmp_path / "whole", steps=3, batch_size=4, grad_accum=1)
    for key in whole:
        torch.testing.assert_close(accumulated[key], whole[key], rtol=0, atol=1e-6)


class NanAfter:
    """Next-token loss that turns NaN from call `n` on."""

    def __init__(self, n: int):
        from lmstack.train.sft import NextTokenLoss

        self.inner, self.calls, self.n = NextTokenLoss(), 0, n
        self.count = self.inner.count

    def __call__(self, model, batch):
        self.calls += 1
        loss, stats = self.inner(model, batch)
        return (loss * float("nan") if self.calls > self.n else loss), stats


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    from lmstack.data import pad_batch
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(family="llama", vocab_size=64, hidden_size=32, intermediate_size=64,
                                    num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8))
    run = RunSection(steps=10, batch_size=4, checkpoint_every=2, out_dir=str(tmp_path))
    with pytest.raises(LmstackError, match=r"loss became nan .* at step 6.*last good checkpoint is kept"):
        train(model, Plan(NanAfter(5), samples(), [], lambda b: pad_batch(b, pad_token_id=0)),
              optimizer=OptimizerSection(), run=run, device="cpu")
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=False)
    assert state["step"] == 4
    assert all(torch.isfinite(w).all() for w in state["weights"].values())
    logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5]


def test_a_dataset_smaller_than_one_global_batch_is_refused(tmp_path):
    with pytest.raises(LmstackError, match="fewer than one global batch"):
        tiny_train(tmp_path, batch_size=64)


class DistanceToTarget:
    """Squared distance of w·x to a per-sample target: training pulls w towards the train targets."""

    def count(self, batch):
        return len(batch["target"])

    def __call__(self, model, batch):
        return ((model(batch["input_ids"]).squeeze(-1) - batch["target"]) ** 2).sum(), {}


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    collate = lambda rows: {"input_ids": torch.ones(len(rows), 1), "target": torch.tensor(rows)}  # noqa: E731
    run = RunSection(steps=40, batch_size=2, eval_every=2, patience=2, out_dir=str(tmp_path))
    # Training moves w towards +1, so the loss on targets of -1 only grows after the first evaluation.
    result = train(model, Plan(DistanceToTarget(), [1.0] * 4, [-1.0] * 2, collate),
                   optimizer=OptimizerSection(lr=0.05, schedule="constant"), run=run, device="cpu")
    assert result.stopped_early and result.steps == 6
    assert [r["step"] for r in result.history if "val_loss" in r] == [2, 4, 6]


def test_deterministic_algorithms_are_on_only_during_the_run(tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    seen = []

    class Watching(DistanceToTarget):
        def __call__(self, model, batch):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return super().__call__(model, batch)

    model = torch.nn.Linear(1, 1, bias=False)
    collate = lambda rows: {"input_ids": torch.ones(len(rows), 1), "target": torch.tensor(rows)}  # noqa: E731
    run = RunSection(steps=2, batch_size=2, out_dir=str(tmp_path), deterministic=True)
    train(model, Plan(Watching(), [1.0] * 4, [], collate), optimizer=OptimizerSection(), run=run, device="cpu")
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()
