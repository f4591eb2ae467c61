"""Prefill and decode speed: lmstack vs transformers (same fp32 weights) vs llama.cpp (same GGUF).

    python bench/generation.py [--model smollm2-135m-instruct] [--threads 2] [--repeats 3]

Prefill: tokens/s of one 500-token prompt. Decode: tokens/s of 128 greedy new tokens (no early
stop), at batch 1 and aggregated over a batch of 8. lmstack runs on its engine with prefix caching
off (a repeated prompt would otherwise be served from the cache). Every engine is timed the same way, as the
difference between a 1-token and a 129-token generation, best of `--repeats`. Prints a Markdown
table and the ratios against each peer measured in this run.
"""

from __future__ import annotations

import argparse
import time
from importlib import metadata

import numpy as np
import torch

PROMPT_TOKENS = 500
NEW_TOKENS = 128


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def speeds(run, batch: int, repeats: int) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s aggregated over the batch) for `run(new_tokens)`."""
    prefill = best_of(repeats, lambda: run(1))
    total = best_of(repeats, lambda: run(NEW_TOKENS + 1))
    return batch * PROMPT_TOKENS / prefill, batch * NEW_TOKENS / max(total - prefill, 1e-9)


def prompts(vocab: int, batch: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(100, vocab - 100, (batch, PROMPT_TOKENS), generator=g).tolist()


def bench_lmstack(loaded, batch: int, repeats: int):
    from lmstack.generate.engine import Engine, EngineConfig
    from lmstack.generate.generate import generate_ids
    from lmstack.generate.processors import SamplingConfig

    ids = prompts(loaded.config.vocab_size, batch)
    greedy = SamplingConfig(temperature=0.0)
    engine = Engine(loaded.model, config=EngineConfig(prefix_caching=False))  # every run computes its prompt
    return speeds(lambda n: generate_ids(loaded.model, ids, sampling=greedy, max_new_tokens=n, engine=engine),
                  batch, repeats)


def bench_transformers(directory, vocab: int, batch: int, repeats: int, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()
    ids = torch.tensor(prompts(vocab, batch))
    mask = torch.ones_like(ids)

    def run(n: int):
        with torch.inference_mode():
            model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=0)

    return speeds(run, batch, repeats)


def bench_llama_cpp(gguf_path, vocab: int, threads: int, repeats: int):
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), n_ctx=PROMPT_TOKENS + NEW_TOKENS + 8, n_batch=PROMPT_TOKENS,
                n_threads=threads, verbose=False)
    ids = prompts(vocab, 1)[0]

    def run(n: int):
        llm.reset()
        llm.eval(ids)
        for _ in range(n - 1):  # greedy: argmax of the last position's logits
            token = int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).argmax())
            llm.eval([token])

    return speeds(run, 1, repeats)


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="weights dtype for lmstack and transformers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import lmstack
    from lmstack.hub import resolve

    loaded = lmstack.load(args.model, device=args.device, dtype=args.dtype)
    vocab = loaded.config.vocab_size
    rows: dict[str, dict[str, float]] = {}
    for batch in (1, 8):
        prefill, decode = bench_lmstack(loaded, batch, args.repeats)
        rows.setdefault("lmstack", {}).update({f"prefill_b{batch}": prefill, f"decode_b{batch}": decode})
    if version("transformers") != "not installed" and args.device == "cpu":
        for batch in (1, 8):
            prefill, decode = bench_transformers(loaded.path, vocab, batch, args.repeats, loaded.model.lm_head.weight.dtype)
            rows.setdefault("transformers", {}).update({f"prefill_b{batch}": prefill, f"decode_b{batch}": decode})
    source = resolve(args.model)
    if version("llama-cpp-python") != "not installed" and source.kind == "gguf" and args.device == "cpu":
        prefill, decode = bench_llama_cpp(source.path, vocab, args.threads, args.repeats)
        rows["llama.cpp"] = {"prefill_b1": prefill, "decode_b1": decode}

    from lmstack.device import describe_cpu

    print(f"machine: {describe_cpu()}, {args.threads} threads, device {args.device}, "
          f"dtype {args.dtype} (llama.cpp: the GGUF's own quantized weights)")
    print(f"versions: torch {torch.__version__}, transformers {version('transformers')}, "
          f"llama-cpp-python {version('llama-cpp-python')}, lmstack {lmstack.__version__}")
    columns = ["prefill_b1", "decode_b1", "prefill_b8", "decode_b8"]
    print("\n| engine | " + " | ".join(f"{c} tok/s" for c in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for engine, values in rows.items():
        print(f"| {engine} | " + " | ".join(f"{values[c]:.1f}" if c in values else "n/a" for c in columns) + " |")
    ours = rows["lmstack"]
    for peer, values in rows.items():
        if peer == "lmstack":
            continue
        ratios = ", ".join(f"{c} {ours[c] / values[c]:.2f}x" for c in columns if c in values)
        print(f"\nlmstack / {peer}: {ratios}")


if __name__ == "__main__":
    main()
