"""Serving under load: N concurrent streaming clients against `lmstack serve` and `llama-server`.

    python bench/serve_load.py [--model smollm2-135m-instruct] [--clients 16] [--requests 48]
                               [--llama-server PATH] [--skip-llama]

Both servers run the same GGUF in this run (lmstack dequantizes it to fp32, llama.cpp runs the
Q4_1 weights), each started as a subprocess on its own port with the machine's threads;
llama-server gets `-np CLIENTS` parallel slots. Every client sends chat requests from a mix of
short, medium and long prompts written here, with answer lengths cycling through 64, 128 and 192
tokens (mean 128; `ignore_eos`, so both servers generate exactly that many), and streams the
answer. Reported: aggregate throughput (generated tokens / wall time), time to first token and
inter-token latency percentiles, and the ratios lmstack / llama-server.

llama-server is not in the llama-cpp-python wheel; give its path with --llama-server (or put it on
PATH). `bench/build_llama_server.sh` builds it from the llama.cpp sources vendored in the
llama-cpp-python sdist.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ANSWER_LENGTHS = (64, 128, 192)
SHORT = ["What is the capital of France?", "Name three primary colours.", "Why is the sky blue?",
         "Give me a synonym for happy.", "How many legs does a spider have?", "What is 12 times 12?"]
MEDIUM = [
    "Explain in simple words how a refrigerator keeps food cold, and why it needs electricity to do so. "
    "Mention the role of the compressor and of the coils at the back.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle. The story should have a "
    "beginning, a middle and an end, and take place during a storm.",
    "Compare trains and planes for a 500 kilometre trip: cost, time door to door, comfort, and the carbon "
    "emitted. Finish with a recommendation for a family of four.",
]
LONG_CONTEXT = (
    "The city council met on Tuesday to discuss the new bicycle lanes. Residents of the old town argued that "
    "the lanes would take away parking spaces that shop owners depend on, while cycling groups pointed to the "
    "drop in accidents in neighbouring towns that built protected lanes five years ago. The mayor proposed a "
    "trial period of six months on two streets, with counts of cyclists, pedestrians and cars taken before and "
    "after. The budget for the trial is small, since the lanes would be marked with paint and plastic posts "
    "rather than concrete kerbs. Several speakers asked that delivery vans keep access to the shops in the "
    "morning hours, and the transport office agreed to study loading zones at the corners. A vote is expected "
    "next month, after a public survey that will be open online and at the library. "
)
LONG = [LONG_CONTEXT * 2 + "Summarise the discussion above in five bullet points.",
        LONG_CONTEXT * 3 + "What did the mayor propose, and what happens next?"]


def workload(requests: int) -> list[tuple[str, int]]:
    """(prompt, answer length) for each request: a fixed interleaving of short, medium and long."""
    prompts = [SHORT[i % len(SHORT)] if i % 3 == 0 else MEDIUM[i % len(MEDIUM)] if i % 3 == 1 else LONG[i % len(LONG)]
               for i in range(requests)]
    return [(p, ANSWER_LENGTHS[i % len(ANSWER_LENGTHS)]) for i, p in enumerate(prompts)]


@dataclass
class Result:
    ok: bool
    status: int = 0
    ttft: float | None = None
    token_times: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str = ""


async def stream_chat(client, url: str, model: str, prompt: str, max_tokens: int, api_key: str | None = None,
                      extra: dict | None = None) -> Result:
    """One streamed chat request; the time of every chunk that carries text."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, **(extra or {})}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    start = time.perf_counter()
    result = Result(ok=False)
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = (await response.aread()).decode(errors="replace")[:200]
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    result.ok = True
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    result.tokens = chunk["usage"]["completion_tokens"]
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    now = time.perf_counter() - start
                    result.ttft = now if result.ttft is None else result.ttft
                    result.token_times.append(now)
        result.tokens = result.tokens or len(result.token_times)
    except Exception as error:  # a bench records failures, it does not stop at the first
        result.error = f"{type(error).__name__}: {error}"
    return result


async def run_clients(url: str, model: str, jobs: list[tuple[str, int]], clients: int,
                      extra: dict | None = None) -> tuple[list[Result], float]:
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    results: list[Result] = []
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        async def worker() -> None:
            while not queue.empty():
                prompt, length = queue.get_nowait()
                results.append(await stream_chat(client, url, model, prompt, length, extra=extra))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return results, time.perf_counter() - start


def summarize(results: list[Result], wall: float) -> dict[str, float]:
    done = [r for r in results if r.ok]
    ttfts = [r.ttft for r in done if r.ttft is not None]
    itls = [b - a for r in done for a, b in zip(r.token_times, r.token_times[1:])]
    tokens = sum(r.tokens for r in done)
    pct = lambda values, q: float(np.percentile(values, q)) if values else float("nan")  # noqa: E731
    return {"ok": len(done), "failed": len(results) - len(done), "tokens": tokens, "wall_s": wall,
            "tok_s": tokens / wall, "ttft_p50": pct(ttfts, 50), "ttft_p90": pct(ttfts, 90),
            "itl_p50_ms": 1000 * pct(itls, 50), "itl_p90_ms": 1000 * pct(itls, 90)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server at {url} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server at {url} did not become healthy in {timeout:g} s")


def start_lmstack(model: str, port: int, clients: int, extra_args: list[str] = ()) -> subprocess.Popen:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, "-m", "lmstack.cli", "serve", model, "--port", str(port),
               "--max-sequences", str(max(clients, 1)), *extra_args]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def start_llama(binary: str, gguf: Path, port: int, clients: int, threads: int) -> subprocess.Popen:
    command = [binary, "-m", str(gguf), "--port", str(port), "-np", str(clients), "-c", str(clients * 1024),
               "-t", str(threads), "--log-disable"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(name: str, start, url: str, model: str, jobs, clients: int, extra: dict | None) -> dict[str, float]:
    process = start()
    try:
        wait_healthy(url, process)
        asyncio.run(run_clients(url, model, jobs[:2], 2, extra))  # warm-up
        results, wall = asyncio.run(run_clients(url, model, jobs, clients, extra))
        summary = summarize(results, wall)
        failures = [r.error or f"status {r.status}" for r in results if not r.ok]
        if failures:
            print(f"{name}: {len(failures)} failed, e.g. {failures[0]}", file=sys.stderr)
        return summary
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()

    from lmstack.device import describe_cpu
    from lmstack.hub import pull

    gguf = pull(args.model)
    jobs = workload(args.requests)
    extra = {"ignore_eos": True}
    rows = {}
    port = free_port()
    rows["lmstack"] = measure("lmstack", lambda: start_lmstack(args.model, port, args.clients),
                              f"http://127.0.0.1:{port}", args.model, jobs, args.clients, extra)
    if args.skip_llama or not args.llama_server:
        if not args.skip_llama:
            print("llama-server not found: pass --llama-server PATH (bench/build_llama_server.sh builds one)",
                  file=sys.stderr)
    else:
        port = free_port()
        rows["llama-server"] = measure("llama-server", lambda: start_llama(args.llama_server, gguf, port,
                                                                           args.clients, args.threads),
                                       f"http://127.0.0.1:{port}", args.model, jobs, args.clients, extra)
    print(f"\n{args.clients} streaming clients, {args.requests} requests, answers of {ANSWER_LENGTHS} tokens; "
          f"{platform.machine()}, {args.threads} threads; CPU: {describe_cpu()}\n")
    print("| server | ok | failed | tokens | wall s | tok/s | TTFT p50 s | TTFT p90 s | ITL p50 ms | ITL p90 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['ok']} | {r['failed']} | {r['tokens']} | {r['wall_s']:.1f} | {r['tok_s']:.1f} | "
              f"{r['ttft_p50']:.2f} | {r['ttft_p90']:.2f} | {r['itl_p50_ms']:.0f} | {r['itl_p90_ms']:.0f} |")
    if "llama-server" in rows:
        ours, peer = rows["lmstack"], rows["llama-server"]
        print(f"\nlmstack / llama-server: throughput {ours['tok_s'] / peer['tok_s']:.2f}x, "
              f"TTFT p50 {ours['ttft_p50'] / peer['ttft_p50']:.2f}x, ITL p50 {ours['itl_p50_ms'] / peer['itl_p50_ms']:.2f}x")


if __name__ == "__main__":
    main()
