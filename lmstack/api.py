"""The object users hold: `lmstack.load(ref)` gives a `LoadedModel` that generates, chats and saves.

This is the top of the package (in the spirit of LitGPT's `api.py`): it only composes the stages
below it. Stages themselves load through `lmstack.hub.load.load_model` and take a `ModelBundle`,
so a `LoadedModel` can be passed anywhere a bundle is expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmstack.hub.load import ModelBundle, load_model


class LoadedModel(ModelBundle):
    """A model with its tokenizer and defaults: `.model .tokenizer .config .generation_config`."""

    def generate(self, prompt: str | list[str], **kwargs: Any):
        """Generate text for one prompt or a batch; see `lmstack.generate.text.generate_text`."""
        from lmstack.generate.text import generate_text

        return generate_text(self, prompt, **kwargs)

    def chat(self, messages: list[dict[str, str]], **kwargs: Any):
        """Answer a conversation in OpenAI `messages` form with the model's chat template."""
        from lmstack.generate.text import chat_text

        return chat_text(self, messages, **kwargs)

    def save(self, path: str | Path, format: str = "hf", dtype: str = "fp32", overwrite: bool = False) -> Path:
        """Export the model; `format="hf"` writes a directory transformers loads as is."""
        from lmstack.hub.export import export_model

        return export_model(self, path, format=format, dtype=dtype, overwrite=overwrite)


def load(ref: str | Path, device: str | None = None, dtype: str | None = None,
         adapter: str | Path | None = None) -> LoadedModel:
    """Load a model by catalog name, GGUF path, HF directory, PEFT adapter directory or registry id.

    `dtype` None or "auto" picks bf16 where the hardware computes it natively, else fp32.
    """
    return LoadedModel(**load_model(ref, device=device, dtype=dtype, adapter=adapter).fields())
