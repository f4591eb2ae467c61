"""Fold a trained LoRA/DoRA adapter into its base model: one plain model directory, no adapter
needed at inference, recorded in the registry with both the base and the adapter as parents."""

from __future__ import annotations

from pathlib import Path

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.home import check_output
from lmstack.hub.load import load_model
from lmstack.model import hf_io
from lmstack.peft import load_adapter, merge_lora


def merge_adapter(base_ref: str, adapter_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Load `base_ref`, apply the adapter in `adapter_dir`, merge it exactly, write an HF directory."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise LmstackError(f"{adapter_dir} is not an adapter directory (no adapter_config.json)")
    out_dir = check_output(out_dir, overwrite=overwrite)
    bundle = load_model(base_ref, device="cpu", dtype="fp32")
    merge_lora(load_adapter(bundle.model, adapter_dir))
    out = hf_io.write_model_dir(out_dir, bundle.config, bundle.model.state_dict(), bundle.tokenizer,
                                bundle.generation_config)
    adapter_id = registry.id_for(adapter_dir, kind="adapter")
    registry.record("model", out, name=Path(out).name, operation="merge-adapter", source=base_ref,
                    parents=[bundle.lineage_id(), adapter_id],
                    recipe={"base": base_ref, "adapter": str(adapter_dir.resolve())})
    return Path(out)
