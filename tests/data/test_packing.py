"""Packing keeps samples apart: positions restart, segments separate them, and the loss of a
packed row equals the loss of its samples run one by one."""

import pytest
import torch

from lmstack.data import IGNORE_INDEX, TokenizedSample, pack_samples, pad_batch
from lmstack.errors import LmstackError


def sample(ids, trained_from):
    """A sample whose tokens from index `trained_from` on are trained (like an answer after a prompt)."""
    return TokenizedSample(list(ids), [IGNORE_INDEX] * trained_from + list(ids[trained_from:]))


SAMPLES = [sample(range(10, 16), 2), sample(range(20, 24), 1), sample(range(30, 37), 3), sample(range(40, 43), 0)]


def test_sequential_packing_layout():
    batch = pack_samples(SAMPLES, 12, pad_token_id=0, strategy="sequential")
    assert batch["input_ids"].tolist() == [[*range(10, 16), *range(20, 24), 0, 0],
                                           [*range(30, 37), *range(40, 43), 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 0, 0],
                                              [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0, 0]]
    assert batch["segment_ids"].tolist() == [[1] * 6 + [2] * 4 + [0, 0], [1] * 7 + [2] * 3 + [0, 0]]
    # The first token of each sample is never a target: it would be predicted from the previous sample.
    m = IGNORE_INDEX
    assert batch["labels"].tolist() == [[m, m, 12, 13, 14, 15, m, 21, 22, 23, m, m],
                                        [m, m, m, 33, 34, 35, 36, m, 41, 42, m, m]]


def test_best_fit_uses_fewer_rows_and_keeps_every_sample_whole():
    lengths = [7, 6, 5, 4, 3, 3]
    samples = [sample(range(100 * i, 100 * i + n), 0) for i, n in enumerate(lengths)]
    sequential = pack_samples(samples, 10, strategy="sequential")
    best = pack_samples(samples, 10, strategy="best_fit")
    assert (len(sequential["input_ids"]), len(best["input_ids"])) == (4, 3)
    found = []
    for ids, segments in zip(best["input_ids"].tolist(), best["segment_ids"].tolist()):
        for segment in set(segments) - {0}:
            found.append([t for t, s in zip(ids, segments) if s == segment])
    assert sorted(found) == sorted(s.input_ids for s in samples)


def test_overlong_samples_are_refused_or_truncated_never_split():
    long = sample(range(1, 15), 0)
    with pytest.raises(LmstackError, match="Sample 1 has 14 tokens, more than the packing length 10"):
        pack_samples([SAMPLES[1], long], 10)
    batch = pack_samples([long], 10, overlong="truncate")
    assert batch["input_ids"].tolist() == [list(range(1, 11))]
    assert batch["segment_ids"].tolist() == [[1] * 10]


def test_pad_batch_right_pads_with_masked_labels():
    batch = pad_batch(SAMPLES[:2], pad_token_id=9)
    assert batch["input_ids"].tolist() == [list(range(10, 16)), [20, 21, 22, 23, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX, 21, 22, 23, IGNORE_INDEX, IGNORE_INDEX]


def summed_loss(logits, labels):
    """Causal LM loss summed over trained tokens: position t predicts label t+1."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                             ignore_index=IGNORE_INDEX, reduction="sum")


def test_packed_loss_equals_loss_of_samples_one_by_one(tiny_config):
    from lmstack.model.transformer import Transformer

    torch.manual_seed(0)
    model = Transformer(tiny_config).eval()
    generator = torch.Generator().manual_seed(1)
    samples = [sample(torch.randint(1, 128, (n,), generator=generator).tolist(), n // 3) for n in (9, 5, 13, 7, 4)]
    with torch.no_grad():
        separate = sum(summed_loss(model(torch.tensor([s.input_ids])), torch.tensor([s.labels])) for s in samples)
        packed = pack_samples(samples, 20)
        logits = model(packed["input_ids"], position_ids=packed["position_ids"], segment_ids=packed["segment_ids"])
        together = summed_loss(logits, packed["labels"])
        padded = pad_batch(samples)
        padded_loss = summed_loss(model(padded["input_ids"], attention_mask=padded["attention_mask"]), padded["labels"])
        # Without segment ids attention leaks across samples and the loss changes: the check has teeth.
        leaky = model(packed["input_ids"], position_ids=packed["position_ids"])
    assert len(packed["input_ids"]) < len(samples)
    torch.testing.assert_close(together, separate, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(padded_loss, separate, rtol=1e-5, atol=1e-4)
    assert abs(summed_loss(leaky, packed["labels"]) - separate) > 1e-3
