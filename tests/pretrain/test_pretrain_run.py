"""Pre-training from scratch: the depth knob, the run, what it beats, what it records, exact resume,
the scaling fit, the loss landscape and distillation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pretrain_recipes import pretrain_recipe

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.pretrain.sizing import config_for, parameter_count, shape_for_depth
from lmstack.tokenizer import Tokenizer


def test_depth_derives_width_heads_and_learning_rate(trained_tokenizer):
    small, large = shape_for_depth(4), shape_for_depth(16)
    assert (small.width, small.heads, large.width, large.heads) == (256, 4, 1024, 16)
    assert large.lr == pytest.approx(small.lr / 2)  # lr ~ 1 / sqrt(width)
    assert shape_for_depth(4, width=384, heads=6).heads == 6
    config = config_for(small, Tokenizer.from_dir(trained_tokenizer), max_len=128)
    from lmstack.model.transformer import Transformer

    model = Transformer(config)
    assert parameter_count(config) == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_width_not_divisible_by_heads_is_refused():
    with pytest.raises(LmstackError, match="not divisible by model.heads"):
        shape_for_depth(2, width=100, heads=3)
    from lmstack.train.recipe import load_recipe

    with pytest.raises(LmstackError, match="model.width 100 is not divisible by model.heads 3"):
        load_recipe(None, {"model.width": 100, "model.heads": 3})


def test_a_small_model_beats_the_unigram_baseline_by_a_wide_margin(pretrained):
    result, _ = pretrained
    assert result.steps == 150
    assert result.perplexity < 0.5 * result.unigram_perplexity, (result.perplexity, result.unigram_perplexity)


def test_the_result_is_an_ordinary_model_that_transformers_loads(pretrained):
    transformers = pytest.importorskip("transformers")
    from lmstack.hub.load import load_model

    result, _ = pretrained
    ours = load_model(result.model, device="cpu", dtype="fp32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(result.model, torch_dtype=torch.float32).eval()
    ids = torch.tensor([ours.tokenizer.encode("import json\n\ndef load(path):\n    with open(path) as f:")])
    with torch.no_grad():
        torch.testing.assert_close(ours.model(ids), theirs(ids).logits, atol=1e-4, rtol=1e-4)
    from lmstack.generate.text import generate_text

    assert generate_text(ours, "def ", raw=True, max_new_tokens=8).new_tokens >= 1


def test_lineage_tokenizer_and_shards_are_the_parents_and_perplexity_is_scored(pretrained, trained_tokenizer):
    result, out_dir = pretrained
    model = registry.find_by_path(result.model)
    parents = [registry.get(p) for p in model.parents]
    assert [(p.kind, p.operation) for p in parents] == [("tokenizer", "tokenizer-train"), ("dataset", "shards")]
    assert parents[0].path == trained_tokenizer.resolve() and parents[1].path == (out_dir / "data").resolve()
    assert registry.get(parents[1].parents[0]).path == trained_tokenizer.resolve()  # shards come from the tokenizer
    score = registry.scores(model.id)[-1]
    assert score.metric == "perplexity" and score.value == pytest.approx(result.perplexity)
    assert model.recipe["optimizer"]["lr"] == pytest.approx(shape_for_depth(2).lr)  # what ran is recorded
    assert model.recipe["model"]["ref"] == ""


def test_resume_after_an_interruption_is_exact(pretrained, trained_tokenizer, tmp_path, monkeypatch):
    from lmstack.pretrain.run import pretrain
    from lmstack.train import core
    from lmstack.hub.load import load_model

    shards = pretrained[1] / "data"  # prepared once by the session's run
    settings = {"run.steps": 6, "run.checkpoint_every": 2, "model.depth": 1}
    straight = pretrain(pretrain_recipe(shards, trained_tokenizer, tmp_path / "a", **settings))
    original_step = core._Loop._train_step

    def interrupted(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return original_step(self)

    monkeypatch.setattr(core._Loop, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain(pretrain_recipe(shards, trained_tokenizer, tmp_path / "b", **settings))
    monkeypatch.setattr(core._Loop, "_train_step", original_step)
    resumed = pretrain(pretrain_recipe(shards, trained_tokenizer, tmp_path / "b", **settings), resume=True)
    a = load_model(straight.model, device="cpu", dtype="fp32").model.state_dict()
    b = load_model(resumed.model, device="cpu", dtype="fp32").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sizes_fit_a_power_law_of_loss_against_compute(pretrained, trained_tokenizer, tmp_path):
    from lmstack.pretrain.run import power_law, pretrain_sizes

    recipe = pretrain_recipe(pretrained[1] / "data", trained_tokenizer, tmp_path / "sizes", **{"run.steps": 8})
    results = pretrain_sizes(recipe, [1, 2])
    saved = json.loads((tmp_path / "sizes" / "scaling.json").read_text())
    assert [r["depth"] for r in saved["runs"]] == [1, 2] and (tmp_path / "sizes" / "scaling.png").is_file()
    assert results[1].flops > results[0].flops
    fit = power_law([1e10, 1e11, 1e12], [4.0, 2.0, 1.0])  # loss halves per decade: b = -log10(2)
    assert fit["b"] == pytest.approx(-math.log10(2)) and fit["a"] == pytest.approx(4.0 * 1e10 ** math.log10(2))


def test_loss_landscape_is_lowest_near_the_trained_weights(pretrained, tmp_path):
    from lmstack.pretrain.landscape import loss_landscape

    result, out_dir = pretrained
    landscape = loss_landscape(result.model, out_dir / "data", tmp_path / "land.png", points=3, span=1.0, windows=4,
                               max_len=64)
    assert landscape.losses[1][1] == pytest.approx(landscape.center_loss, rel=1e-5)  # the grid's middle is 0, 0
    assert landscape.center_loss < min(landscape.losses[0][0], landscape.losses[2][2])
    assert (tmp_path / "land.png").is_file() and (tmp_path / "land.json").is_file()


def test_distillation_pulls_the_student_towards_the_teacher(pretrained, trained_tokenizer, tmp_path):
    from lmstack.train.run import train_recipe

    teacher = pretrained[0].model
    runs = {}
    for weight in (0.0, 0.9):
        recipe = pretrain_recipe(pretrained[1] / "data", trained_tokenizer, tmp_path / f"kd{weight}", **{
            "objective.loss": "distill", "objective.teacher": teacher, "objective.kd_weight": weight,
            "model.depth": 1, "run.steps": 15, "method.type": "full", "data.val_fraction": 0.05,
            "model.ref": "", "optimizer.lr": 3e-3})
        runs[weight] = train_recipe(recipe)
    kd, plain = runs[0.9].train.metrics, runs[0.0].train.metrics
    # the same data, steps and initialisation; only the loss differs: on held-out windows the
    # distilled student's next-token distribution is closer to the teacher's
    assert kd["val_kl"] < plain["val_kl"], (kd, plain)
    artifact = registry.find_by_path(runs[0.9].output)
    assert registry.find_by_path(teacher).id in artifact.parents and artifact.operation == "distill"


def test_distillation_refuses_a_teacher_with_another_vocabulary(pretrained, corpus_dir, tmp_path):
    from lmstack.pretrain.tokenizer_training import train_tokenizer
    from lmstack.train.run import train_recipe

    other = tmp_path / "other-tok"
    train_tokenizer([corpus_dir], other, [500])
    recipe = pretrain_recipe(corpus_dir, other, tmp_path / "kd", **{"objective.loss": "distill", "model.depth": 1,
                                                                   "objective.teacher": pretrained[0].model,
                                                                   "method.type": "full"})
    with pytest.raises(LmstackError, match="different vocabularies"):
        train_recipe(recipe)
