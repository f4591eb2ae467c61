"""llama.cpp as the measuring stick for GGUF files (through the optional `llama-cpp-python`).

The same token windows as `quality.py` are scored by llama.cpp itself, so a perplexity from
here and one from lmstack on the same GGUF differ only by the two engines' arithmetic (llama.cpp
also rounds activations to 8 bits inside its quantized matmuls). llama.cpp's own quantizer
(`llama_model_quantize`, the library behind `llama-quantize`) makes the reference files that
lmstack's export is compared with.
"""

from __future__ import annotations

import ctypes
import math
import time
from pathlib import Path

import numpy as np

from lmstack.errors import LmstackError
from lmstack.quant.gguf_export import FILE_TYPES


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise LmstackError("llama.cpp comparisons need llama-cpp-python: pip install llama-cpp-python") from None
    return llama_cpp


def load(path: str | Path, n_ctx: int = 512, threads: int | None = None):
    """A llama.cpp model with logits for every position."""
    llama_cpp = _llama_cpp()
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False,
                           n_threads=threads, n_threads_batch=threads)


def perplexity(path: str | Path, windows: list[list[int]], threads: int | None = None) -> float:
    """llama.cpp's perplexity over token windows (each from an empty context, as `quality.py`)."""
    llm = load(path, max(map(len, windows)), threads)
    nll, count = 0.0, 0
    for window in windows:
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[: len(window) - 1], dtype=np.float64)
        top = logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
        nll += float((log_z - logits[np.arange(len(window) - 1), window[1:]]).sum())
        count += len(window) - 1
    return math.exp(nll / count)


def decode_speed(path: str | Path, prompt: list[int], tokens: int = 64, threads: int | None = None) -> float:
    """Greedy decode tokens/s at batch 1 (best of two, after a warm-up), the way lmstack is timed."""
    llm = load(path, 512, threads)
    best = 0.0
    for attempt in range(3):
        llm.reset()
        llm.eval(prompt)
        start = time.perf_counter()
        for _ in range(tokens - 1):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        if attempt:  # the first run is the warm-up
            best = max(best, (tokens - 1) / (time.perf_counter() - start))
    return best


def quantize(source: str | Path, out: str | Path, file_type: str, threads: int = 2) -> float:
    """llama.cpp's own quantization of an F32/F16 GGUF into `file_type`; seconds it took."""
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(FILE_TYPES[file_type][1])
    params.nthread = threads
    start = time.perf_counter()
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise LmstackError(f"llama.cpp could not quantize {source} to {file_type}")
    return time.perf_counter() - start
