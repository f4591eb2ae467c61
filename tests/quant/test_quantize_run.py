"""`lmstack quant METHOD` end to end on a tiny model: calibrated methods, the saved directory
reloading through `lmstack.load`, lineage and scores in the registry, the quality table."""

from __future__ import annotations

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.quant.run import quantize


@pytest.mark.parametrize("method,settings", [
    ("gptq", {"group_size": 32}), ("awq", {"group_size": 32}), ("smoothquant", {"alpha": 0.6}),
    ("gptq", {"bits": 8, "act_order": False}),
])
def test_calibrated_quantization_saves_reloads_and_is_recorded(tmp_path, tiny_dir, tiny_texts, method, settings):
    from lmstack import registry
    from lmstack.api import load

    calib, held_out = tiny_texts
    result = quantize(str(tiny_dir), tmp_path / "q", method=method, calib=str(calib), samples=4, seq_len=64,
                      eval_text=str(held_out), decode_tokens=4, **settings)
    reference, quantized = result.quality
    assert quantized.size_bytes < reference.size_bytes
    assert 0 <= quantized.kl < 0.5 and quantized.perplexity < 1.5 * reference.perplexity
    assert quantized.decode_tokens_per_second > 0
    artifact = registry.get(result.registry_id)
    assert artifact.operation == "quantize" and artifact.recipe["method"] == method
    assert artifact.parents == [registry.find_by_path(tiny_dir).id]
    assert artifact.datasets == [str(calib.resolve())]
    assert {s.metric for s in registry.scores(result.registry_id)} == {"perplexity", "kl_divergence"}

    model = load(result.path, device="cpu", dtype="fp32")
    reply = model.generate("w1 w2 w3", raw=True, max_new_tokens=5)
    assert reply.new_tokens == 5
    ids = torch.tensor([model.tokenizer.encode("w4 w5 w6 w7")])
    with torch.no_grad():
        assert torch.isfinite(model.model(ids)).all()


def test_gptq_beats_round_to_nearest_on_held_out_text(tmp_path, tiny_dir, tiny_texts):
    calib, held_out = tiny_texts
    common = {"group_size": 64, "search": 0, "eval_text": str(held_out), "decode_tokens": 0}
    rtn = quantize(str(tiny_dir), tmp_path / "rtn", method="int4", **common)
    gptq = quantize(str(tiny_dir), tmp_path / "gptq", method="gptq", calib=str(calib), samples=8, seq_len=64,
                    act_order=True, **common)
    assert gptq.quality[1].kl < rtn.quality[1].kl


def test_settings_and_inputs_are_checked_before_the_model_loads(tmp_path, tiny_dir, tiny_texts):
    calib, _ = tiny_texts
    with pytest.raises(LmstackError, match="group_size"):
        quantize(str(tiny_dir), tmp_path / "q", method="int4", group_size=12)
    with pytest.raises(LmstackError, match="damp"):
        quantize(str(tiny_dir), tmp_path / "q", method="gptq", damp=2.0)
    with pytest.raises(LmstackError, match="calibration data not found"):
        quantize(str(tiny_dir), tmp_path / "q", method="gptq", calib=str(tmp_path / "missing.txt"))
    with pytest.raises(LmstackError, match="does not divide"):
        quantize(str(tiny_dir), tmp_path / "q", method="int4", group_size=48, eval_text=None)
    assert not (tmp_path / "q").exists()


def test_a_loaded_quantized_model_saves_quantized(tmp_path, tiny_dir):
    from lmstack.api import load

    result = quantize(str(tiny_dir), tmp_path / "q", method="int4", eval_text=None)
    model = load(result.path, device="cpu", dtype="fp32")
    copy = load(model.save(tmp_path / "copy"), device="cpu", dtype="fp32")
    ids = torch.tensor([model.tokenizer.encode("w1 w2 w3 w4")])
    with torch.no_grad():
        assert torch.equal(copy.model(ids), model.model(ids))
    size = sum(p.stat().st_size for p in (tmp_path / "copy").glob("*.safetensors"))
    assert size == sum(p.stat().st_size for p in result.path.glob("*.safetensors"))
