"""Preference losses against their formulas (and trl where it exposes one), and a tiny DPO run."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lmstack.train.preference import kto_loss, orpo_loss, paired_loss
from lmstack.train.run import train_recipe
from lmstack.train.recipe import load_recipe

# Hand-made summed log-probs for two pairs: (policy chosen, policy rejected, reference chosen, reference rejected).
PAIRS = [(-5.0, -7.0, -6.0, -6.0), (-9.0, -4.0, -8.5, -4.5)]
BETA = 0.1


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def tensors():
    return [torch.tensor(column) for column in zip(*PAIRS)]


def gaps() -> list[float]:
    return [(c - rc) - (r - rr) for c, r, rc, rr in PAIRS]


def test_dpo_sigmoid_loss_is_minus_log_sigmoid_of_the_scaled_reward_gap():
    expected = [-logsigmoid(BETA * g) for g in gaps()]
    assert paired_loss("sigmoid", *tensors(), BETA).tolist() == pytest.approx(expected)
    assert expected[0] == pytest.approx(0.5981388693)  # gap 2: log(1 + e^-0.2)


def test_ipo_loss_is_the_squared_distance_to_the_margin():
    assert paired_loss("ipo", *tensors(), BETA).tolist() == pytest.approx([(g - 5.0) ** 2 for g in gaps()])


def test_conservative_dpo_mixes_both_label_directions():
    eps = 0.2
    expected = [-(1 - eps) * logsigmoid(BETA * g) - eps * logsigmoid(-BETA * g) for g in gaps()]
    assert paired_loss("cdpo", *tensors(), BETA, label_smoothing=eps).tolist() == pytest.approx(expected)
    assert paired_loss("cdpo", *tensors(), BETA, 0.0).tolist() == pytest.approx(paired_loss("sigmoid", *tensors(), BETA).tolist())


def test_kto_loss_pushes_desirable_above_and_undesirable_below_the_reference_point():
    policy, reference = torch.tensor([-5.0, -5.0]), torch.tensor([-6.0, -6.0])
    desirable, kl = torch.tensor([True, False]), torch.tensor(0.5)
    losses = kto_loss(policy, reference, desirable, kl, BETA, desirable_weight=1.0, undesirable_weight=2.0)
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert losses.tolist() == pytest.approx([1 - sigmoid(BETA * (1 - 0.5)), 2 * (1 - sigmoid(BETA * (0.5 - 1)))])


def test_orpo_adds_the_log_odds_ratio_term_to_the_chosen_nll():
    chosen, rejected = torch.tensor([-0.5, -2.0]), torch.tensor([-1.5, -0.3])
    losses, log_odds = orpo_loss(chosen, rejected, BETA)
    for c, r, loss, odds in zip(chosen.tolist(), rejected.tolist(), losses.tolist(), log_odds.tolist()):
        expected_odds = math.log(math.exp(c) / (1 - math.exp(c))) - math.log(math.exp(r) / (1 - math.exp(r)))
        assert odds == pytest.approx(expected_odds)
        assert loss == pytest.approx(-c - BETA * logsigmoid(expected_odds))


def test_orpo_odds_ratio_term_matches_trl():
    orpo = pytest.importorskip("trl.experimental.orpo")
    chosen, rejected = torch.tensor([-0.5, -2.0]), torch.tensor([-1.5, -0.3])
    fake_trainer = SimpleNamespace(beta=BETA, accelerator=SimpleNamespace(device="cpu"))
    trl_term = orpo.ORPOTrainer.odds_ratio_loss(fake_trainer, chosen, rejected)[0]
    ours, _ = orpo_loss(chosen, rejected, BETA)
    torch.testing.assert_close(ours, -chosen - trl_term)


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "kto", "orpo"])
def test_tiny_preference_run_learns_the_preference(tmp_path, preference_file, loss, tiny_bundle):
    recipe = load_recipe(None, {
        "train": preference_file, "template": "chatml", "max_len": 64, "loss": loss, "beta": 0.1 if loss == "ipo" else 0.5, "r": 8,
        "alpha": 16, "lr": 5e-3, "steps": 12, "batch_size": 4, "out_dir": str(tmp_path / "run"), "device": "cpu"})
    result = train_recipe(recipe, bundle=tiny_bundle())
    history = result.train.history
    if loss == "sigmoid":  # the policy starts equal to the reference: every pair's loss is log 2
        assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert history[0]["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert history[-1]["loss"] < history[0]["loss"]
    if loss in ("sigmoid", "ipo"):
        assert history[-1]["accuracy"] == 1.0 and history[-1]["reward_margin"] > history[0]["reward_margin"]
    if loss == "orpo":
        assert history[-1]["nll"] < history[0]["nll"]
    if loss == "kto":
        assert history[-1]["reward"] > history[0]["reward"]
    assert (result.output / "adapter_config.json").is_file()
