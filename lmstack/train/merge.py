"""Fold a trained LoRA/DoRA adapter into its base model: one plain model directory, no adapter
needed at inference, recorded in the registry with both the base and the adapter as parents."""

from __future__ import annotations

from pathlib import Path

from lmstack.errors import LmstackError


def merge_adapter(base_ref: str, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Load `base_ref`, apply the adapter in `adapter_dir`, merge it exactly, write an HF directory."""
    import lmstack
    from lmstack import registry
    from lmstack.model import hf_io
    from lmstack.peft import load_adapter, merge_lora

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise LmstackError(f"{adapter_dir} is not an adapter directory (no adapter_config.json)")
    loaded = lmstack.load(base_ref, device="cpu", dtype="fp32")
    merge_lora(load_adapter(loaded.model, adapter_dir))
    out = hf_io.write_model_dir(out_dir, loaded.config, loaded.model.state_dict(), loaded.tokenizer,
                                loaded.generation_config)
    adapter = registry.find_by_path(adapter_dir)
    registry.record("model", out, name=Path(out).name, operation="merge-adapter", source=base_ref,
                    parents=[loaded.registry_id, adapter.id if adapter else None],
                    recipe={"base": base_ref, "adapter": str(adapter_dir.resolve())})
    return Path(out)
