"""Decode speed idle and beside a busy process, by OpenMP wait policy and thread count.

    python bench/contention.py [--model smollm2-135m-instruct] [--new-tokens 48]

A laptop is rarely idle. With 2 threads and one other busy process, a torch thread that
spin-waits for its partner (OpenMP's default ACTIVE policy) holds a core the other process
wants, and steps slow 10-50x. Each cell runs in its own process (the wait policy is read when
OpenMP starts) and reports greedy decode tokens/s at batch 1 and aggregated over a batch of 8;
"busy" runs one pure-Python busy loop per `--busy` beside it. The `lmstack` command sets PASSIVE
unless OMP_WAIT_POLICY is already set.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys

MEASURE = """
import json, sys, time, torch
from lmstack.hub.load import load_model
from lmstack.generate.generate import generate_ids
torch.set_num_threads(int(sys.argv[2]))
bundle = load_model(sys.argv[1])
n = int(sys.argv[3])
speeds = {}
for batch in (1, 8):
    prompts = [[bundle.tokenizer.bos_token_id or 1] + list(range(1000 + 40 * i, 1040 + 40 * i)) for i in range(batch)]
    generate_ids(bundle.model, prompts, max_new_tokens=2)
    start = time.perf_counter(); generate_ids(bundle.model, prompts, max_new_tokens=1); first = time.perf_counter() - start
    start = time.perf_counter(); generate_ids(bundle.model, prompts, max_new_tokens=n + 1); total = time.perf_counter() - start
    speeds[batch] = batch * n / max(total - first, 1e-9)
print(json.dumps(speeds))
"""


def busy_loop() -> None:
    while True:
        pass


def measure(model: str, threads: int, policy: str | None, busy: int, new_tokens: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    hogs = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(busy)]
    for hog in hogs:
        hog.start()
    try:
        out = subprocess.run([sys.executable, "-c", MEASURE, model, str(threads), str(new_tokens)],
                             capture_output=True, text=True, env=env, check=True, timeout=3600)
    finally:
        for hog in hogs:
            hog.terminate()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--busy", type=int, default=1, help="busy processes beside the measured one")
    args = parser.parse_args()
    from lmstack.device import describe_cpu

    print(f"cpu: {describe_cpu()}, {os.cpu_count()} cores; greedy decode tokens/s, {args.new_tokens} new tokens")
    print("\n| threads | OMP_WAIT_POLICY | idle b1 | idle b8 | busy b1 | busy b8 |\n|---|---|---|---|---|---|")
    for threads in (1, 2):
        for policy in ("PASSIVE", None):
            idle = measure(args.model, threads, policy, 0, args.new_tokens)
            busy = measure(args.model, threads, policy, args.busy, args.new_tokens)
            cells = [idle["1"], idle["8"], busy["1"], busy["8"]]
            print(f"| {threads} | {policy or 'default (ACTIVE)'} | " + " | ".join(f"{c:.1f}" for c in cells) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
