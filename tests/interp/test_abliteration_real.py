"""Abliteration mechanics on the default model: directions from the shipped prompt sets, the
orthogonalised weights equal the hooks, and general text barely notices."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.real
def test_orthogonalised_smollm2_equals_the_hooked_one(smollm2, smollm2_gguf):
    from lmstack.data import dataset_path
    from lmstack.eval.likelihood import perplexity
    from lmstack.hub.load import load_model
    from lmstack.inputs import read_text
    from lmstack.interp.prompts import read_prompts
    from lmstack.interp.refusal import ablation_hooks, orthogonalize, prompt_ids, refusal_directions

    train = read_prompts("lmstack:refusal_train")
    directions = refusal_directions(smollm2.model, prompt_ids(smollm2, train.refuse), prompt_ids(smollm2, train.answer))
    assert directions.shape == (30, 576)
    layer = 19  # a late-middle layer; earlier ones hold more than refusal in this model (see the report)
    edited = load_model(smollm2_gguf, device="cpu", dtype="fp32")  # our own copy: its weights change
    orthogonalize(edited.model, directions[layer])
    text = read_text(dataset_path("lmstack:general_heldout"))
    ids = torch.tensor([smollm2.tokenizer.encode(text)[:128]])
    with torch.no_grad(), ablation_hooks(smollm2.model, directions[layer]):
        hooked = smollm2.model(ids)
    with torch.no_grad():
        torch.testing.assert_close(edited.model(ids), hooked, atol=2e-3, rtol=1e-3)
    before, after = perplexity(smollm2, text), perplexity(edited, text)
    assert after < 1.25 * before  # one direction out of 576: general text hardly changes
