"""Cold start: one question answered by a fresh process, lmstack vs llama.cpp (vs transformers).

    python bench/cold_start.py [--model smollm2-135m-instruct] [--runs 3] [--new-tokens 32] [--transformers]

Each run starts a new Python process that loads the model, answers one chat question (greedy,
`--new-tokens` at most) and exits; the model files are already on disk and in the page cache
(a first run converts the GGUF once; it is not counted). Reports the median wall time, the CPU
time (user + system, which a busy machine inflates less than wall time) and the peak resident
memory of the process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

QUESTION = "What is the capital of France? Answer in one sentence."

LLAMA_CPP = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=512, n_threads=int(sys.argv[3]), verbose=False)
out = llm.create_chat_completion(messages=[{"role": "user", "content": sys.argv[2]}], max_tokens=int(sys.argv[4]),
                                 temperature=0.0)
print(out["choices"][0]["message"]["content"])
"""

TRANSFORMERS = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(int(sys.argv[3]))
tok = AutoTokenizer.from_pretrained(sys.argv[1], gguf_file=sys.argv[5])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], gguf_file=sys.argv[5])
ids = tok.apply_chat_template([{"role": "user", "content": sys.argv[2]}], add_generation_prompt=True, return_tensors="pt")
print(tok.decode(model.generate(ids, max_new_tokens=int(sys.argv[4]), do_sample=False)[0, ids.shape[1]:]))
"""


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, cpu seconds, peak RSS MiB) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    out = child.stdout.read().decode(errors="replace") + child.stderr.read().decode(errors="replace")
    if status != 0:
        raise SystemExit(f"{command[:4]} failed:\n{out}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--transformers", action="store_true", help="also time transformers reading the GGUF (~25 s)")
    args = parser.parse_args()

    from lmstack.device import describe_cpu
    from lmstack.hub import resolve

    gguf = resolve(args.model).path
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    engines = {"lmstack": [sys.executable, "-m", "lmstack.cli", "generate", args.model, QUESTION,
                           "-n", str(args.new_tokens), "--no-stream"]}
    try:
        import llama_cpp  # noqa: F401

        engines["llama.cpp (Q4_1)"] = [sys.executable, "-c", LLAMA_CPP, str(gguf), QUESTION, str(args.threads),
                                       str(args.new_tokens)]
    except ImportError:
        pass
    if args.transformers:
        engines["transformers"] = [sys.executable, "-c", TRANSFORMERS, str(gguf.parent), QUESTION, str(args.threads),
                                   str(args.new_tokens), gguf.name]
    rows = {}
    for name, command in engines.items():
        measure(command, env)  # warm the page cache (and convert the GGUF once)
        runs = [measure(command, env) for _ in range(args.runs)]
        rows[name] = [statistics.median(r[i] for r in runs) for i in range(3)]

    print(f"cpu: {describe_cpu()}, {args.threads} threads; one question, at most {args.new_tokens} new tokens, "
          f"median of {args.runs} fresh processes")
    print("\n| engine | wall s | cpu s | peak RSS MiB |\n|---|---|---|---|")
    for name, (wall, cpu, rss) in rows.items():
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
