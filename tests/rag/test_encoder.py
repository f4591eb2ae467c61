"""Our BERT encoder against transformers on the same weights: all-MiniLM-L6-v2 and a cross-encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")


def test_minilm_embeddings_match_transformers_mean_pooling(minilm):
    from lmstack.rag.embeddings import minilm_dir

    texts = ["The cat sits on the mat.", "Flammable solvents are kept in the yellow cabinet in room B12.", "x"]
    ours = minilm.embed_batch(texts)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    model = transformers.AutoModel.from_pretrained(minilm_dir()).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    assert ours.shape == (3, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_cross_encoder_matches_bert_for_sequence_classification(tmp_path, minilm):
    from lmstack.rag.embeddings import CrossEncoderScorer, minilm_dir

    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, num_labels=1)
    torch.manual_seed(0)
    reference = transformers.BertForSequenceClassification(config).eval()
    reference.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_bytes((minilm_dir() / "tokenizer.json").read_bytes())
    scorer = CrossEncoderScorer(tmp_path)
    query, passages = "who approves flights", ["The lab director approves flights.", "Sharps go into yellow bins."]
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    batch = tokenizer([query] * 2, passages, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**batch).logits[:, 0].tolist()
    np.testing.assert_allclose(scorer.score(query, passages), expected, atol=1e-5)
