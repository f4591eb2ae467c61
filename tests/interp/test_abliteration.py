"""Abliteration on a tiny chat model taught to refuse: the refusal direction is found, removing it
stops the refusals, the saved (orthogonalised) model equals the hooked one, and the activations
we read are transformers' hidden states."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lmstack.errors import LmstackError

TRIGGERS = ["bomb", "poison", "steal", "hack", "knife", "fraud"]
NEUTRAL = [f"w{i}" for i in range(40)]
SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = ["user", "assistant", "sorry"] + TRIGGERS + NEUTRAL


def chat_tokenizer():
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    from lmstack.tokenizer import Tokenizer

    backend = Backend(models.WordLevel({t: i for i, t in enumerate(SPECIALS + WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(SPECIALS)
    return Tokenizer(backend, special_tokens={"eos_token": "<|im_end|>", "unk_token": "<unk>"}, chat_template="chatml")


def prompts(rng: random.Random, n: int, harmful: bool) -> list[str]:
    rows = []
    for _ in range(n):
        words = rng.sample(NEUTRAL, rng.randint(3, 6))
        if harmful:
            words.insert(rng.randrange(len(words) + 1), rng.choice(TRIGGERS))
        rows.append(" ".join(words))
    return rows


@pytest.fixture(scope="module")
def refusing_model(tmp_path_factory) -> dict[str, str]:
    """A 4-layer chat model trained for a few seconds, saved as a model folder, with prompt sets and
    a text to score. Its task is to answer with the prompt's first word; prompts with a trigger word
    get `sorry` instead. As in a real chat model, answering is the default (four prompts in five
    are harmless, and the answer depends on the prompt) and refusing is what a trigger adds."""
    from lmstack.model import hf_io
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    root = tmp_path_factory.mktemp("refusing")
    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    config = ModelConfig(family="llama", vocab_size=len(SPECIALS + WORDS), hidden_size=64, intermediate_size=128,
                         num_layers=4, num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=64,
                         eos_token_id=2)
    model = Transformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    sorry = tokenizer.token_to_id("sorry")
    end = tokenizer.token_to_id("<|im_end|>")
    for step in range(190):  # (more refusal training spreads it over several directions: see the report)
        if step == 160:  # refusal is added in the first two layers only, as a skill on top of answering
            optimizer = torch.optim.AdamW([p for layer in model.model.layers[:2] for p in layer.parameters()], lr=3e-3)
        harmful = 8 if step >= 160 else 0
        batch = [(p, True) for p in prompts(rng, harmful, True)] + [(p, False) for p in prompts(rng, 32, False)]
        batch += [] if harmful else [(p, False) for p in prompts(rng, 8, True)]
        rows = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                              tokenize=True) + [sorry if h else tokenizer.token_to_id(p.split()[0]), end]
                for p, h in batch]
        longest = max(map(len, rows))
        ids = torch.tensor([r + [0] * (longest - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows])
        logits = model(ids, attention_mask=mask)
        answer_at = mask.sum(dim=1) - 3  # the last prompt token predicts the answer, the answer predicts the end
        rows_index = torch.arange(len(rows))
        loss = (torch.nn.functional.cross_entropy(logits[rows_index, answer_at], ids[rows_index, answer_at + 1])
                + torch.nn.functional.cross_entropy(logits[rows_index, answer_at + 1], ids[rows_index, answer_at + 2]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hf_io.write_model_dir(root / "model", config, model.state_dict(), tokenizer, {"eos_token_id": end})
    paths = {"model": str(root / "model")}
    for split, n in (("train", 24), ("val", 8), ("heldout", 16)):
        records = [{"prompt": p, "harmful": True} for p in prompts(rng, n, True)]
        records += [{"prompt": p, "harmful": False} for p in prompts(rng, n, False)]
        path = root / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        paths[split] = str(path)
    (root / "text.txt").write_text(" ".join(rng.choice(NEUTRAL) for _ in range(200)))
    paths["text"] = str(root / "text.txt")
    return paths


def run_abliteration(paths: dict[str, str], out: Path, **options):
    from lmstack.interp.abliterate import abliterate

    return abliterate(paths["model"], out, train=paths["train"], val=paths["val"], heldout=paths["heldout"],
                      text=paths["text"], markers=("sorry",), max_new_tokens=2, device="cpu", **options)


def test_removing_the_direction_stops_the_refusals(refusing_model, tmp_path):
    from lmstack import registry

    report = run_abliteration(refusing_model, tmp_path / "abliterated")
    assert report.before.refusal_rate >= 0.75 and report.before.over_refusal_rate <= 0.25  # the model refuses
    assert report.after.refusal_rate <= 0.25, report  # and no longer does
    assert report.after.over_refusal_rate <= report.before.over_refusal_rate
    assert report.layer in [c.layer for c in report.candidates] and len(report.candidates) >= 2
    artifact = registry.get(report.registry_id)
    assert artifact.operation == "abliterate" and len(artifact.parents) == 1
    assert {s.metric for s in registry.scores(report.registry_id)} == {"refusal_rate", "over_refusal_rate",
                                                                       "perplexity"}
    saved = json.loads((tmp_path / "abliterated" / "abliteration.json").read_text())
    assert saved["after"]["refusal_rate"] == report.after.refusal_rate


def test_the_saved_model_equals_the_hooked_one(refusing_model, tmp_path):
    """Weight orthogonalisation is the hooks made permanent: same logits, and nothing left along r."""
    from lmstack.hub.load import load_model
    from lmstack.interp.prompts import read_prompts
    from lmstack.interp.activations import layer_activations
    from lmstack.interp.refusal import ablation_hooks, prompt_ids, refusal_directions

    report = run_abliteration(refusing_model, tmp_path / "abliterated", layers=[2])
    original = load_model(refusing_model["model"], device="cpu", dtype="fp32")
    edited = load_model(str(tmp_path / "abliterated"), device="cpu", dtype="fp32")
    assert original.config.tie_word_embeddings and not edited.config.tie_word_embeddings  # the head kept its weights
    train = read_prompts(refusing_model["train"])
    direction = refusal_directions(original.model, prompt_ids(original, train.refuse),
                                   prompt_ids(original, train.answer))[report.layer]
    ids = torch.tensor([prompt_ids(original, train.refuse[:1])[0]])
    with torch.no_grad(), ablation_hooks(original.model, direction):
        hooked = original.model(ids)
    with torch.no_grad():
        torch.testing.assert_close(edited.model(ids), hooked, atol=1e-4, rtol=1e-4)
    stream = layer_activations(edited.model, prompt_ids(edited, train.refuse))
    assert (stream @ direction).abs().max() < 1e-4 * stream.norm(dim=-1).max()


def test_hooks_method_saves_the_direction(refusing_model, tmp_path):
    from lmstack.interp.abliterate import load_direction

    report = run_abliteration(refusing_model, tmp_path / "direction", method="hooks", layers=[1, 2])
    direction = load_direction(tmp_path / "direction")
    assert direction.shape == (64,) and abs(float(direction.norm()) - 1) < 1e-5
    assert report.registry_id is None and report.after.refusal_rate <= report.before.refusal_rate


def test_residual_stream_is_transformers_hidden_states():
    """Our activations at the last token are transformers' `hidden_states` entering each layer."""
    transformers = pytest.importorskip("transformers")
    from lmstack.interp.activations import layer_activations
    from lmstack.interp.refusal import refusal_directions
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    reference = transformers.LlamaForCausalLM(hf_config).eval()
    ours = Transformer(ModelConfig.from_hf(hf_config.to_dict() | {"model_type": "llama"}))
    ours.load_state_dict(reference.state_dict())
    g = torch.Generator().manual_seed(1)
    refuse = [torch.randint(0, 100, (n,), generator=g).tolist() for n in (4, 7, 5)]
    answer = [torch.randint(0, 100, (n,), generator=g).tolist() for n in (6, 3)]
    with torch.no_grad():
        expected = {name: torch.stack([torch.stack(reference(torch.tensor([p]), output_hidden_states=True)
                                                   .hidden_states[:3])[:, 0, -1] for p in group], dim=1)
                    for name, group in (("refuse", refuse), ("answer", answer))}
    torch.testing.assert_close(layer_activations(ours, refuse), expected["refuse"], atol=1e-5, rtol=1e-5)
    difference = expected["refuse"].mean(dim=1) - expected["answer"].mean(dim=1)
    torch.testing.assert_close(refusal_directions(ours, refuse, answer),
                               difference / difference.norm(dim=-1, keepdim=True), atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_refused_before_the_model_loads(refusing_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "w1 w2", "harmful": "yes"}\n')
    only_one_kind = tmp_path / "one.jsonl"
    only_one_kind.write_text('{"prompt": "w1 bomb", "harmful": true}\n')
    for changes, message in (({"train": str(bad)}, "'harmful' true/false"),
                             ({"val": str(only_one_kind)}, "harmful: false"),
                             ({"method": "lobotomy"}, "unknown method"),
                             ({"layers": [0]}, "between 1 and 3")):
        paths = {**refusing_model, **{k: v for k, v in changes.items() if k in refusing_model}}
        options = {k: v for k, v in changes.items() if k not in refusing_model}
        with pytest.raises(LmstackError, match=message):
            run_abliteration(paths, tmp_path / "out", **options)
        assert not (tmp_path / "out").exists()


def test_gemma_style_models_cannot_be_orthogonalised():
    from lmstack.interp.refusal import orthogonalize
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    gemma = ModelConfig(family="gemma3", vocab_size=50, hidden_size=32, intermediate_size=64, num_layers=2,
                        num_heads=2, num_kv_heads=1, head_dim=16, sandwich_norm=True, norm_offset=1.0)
    with pytest.raises(LmstackError, match="use --method hooks"):
        orthogonalize(Transformer(gemma), torch.ones(32))
