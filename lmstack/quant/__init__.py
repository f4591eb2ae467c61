"""Quantization: the course's methods (absmax, zero-point, LLM.int8(), NF4, GPTQ, AWQ, SmoothQuant)
producing models that reload with `lmstack.load` and decode faster, and GGUF export for llama.cpp.

Names load on first use, so `lmstack quant --help` starts without torch.
"""

from lmstack.lazy import lazy_names

_LAZY = {"quantize": "lmstack.quant.run", "QuantResult": "lmstack.quant.run",
         "QuantSettings": "lmstack.quant.methods", "quantize_model": "lmstack.quant.methods",
         "quality_table": "lmstack.quant.quality", "format_table": "lmstack.quant.quality"}

__all__ = list(_LAZY)


__getattr__ = lazy_names(__name__, _LAZY)
