"""Hostile load: many requests at once, a share of them malformed, against one `lmstack serve`.

    python bench/serve_stress.py [--model smollm2-135m-instruct] [--requests 1000] [--concurrency 32]
                                 [--malformed 0.1] [--max-tokens 32]

Well-formed requests are chat and text completions, streamed or not. Malformed ones cycle through
broken JSON, wrong types, out-of-range values, an unknown model, a prompt longer than the context,
and a client that disconnects mid-stream. What must hold: no 5xx, the server never dies, every
well-formed request is answered in full, every malformed one gets a 4xx, the sequences of clients
that left are freed, and the server's memory (RSS) stays bounded: the weights, plus the KV cache
budget (its pages are touched as blocks are first used, so RSS climbs to that ceiling and stays).
Prints the counts and RSS.
`tests/serve/test_stress.py` runs a smaller version on a tiny model in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import free_port, start_lmstack, wait_healthy, workload  # noqa: E402

MALFORMED = ("bad_json", "wrong_type", "out_of_range", "unknown_model", "over_long", "disconnect")


@dataclass
class Report:
    sent: Counter = field(default_factory=Counter)  # requests by kind
    statuses: Counter = field(default_factory=Counter)  # (kind, status) -> count
    incomplete: int = 0  # well-formed requests without a full answer
    server_errors: int = 0  # 5xx
    transport_errors: list[str] = field(default_factory=list)
    rss_mb: list[tuple[int, float]] = field(default_factory=list)  # (requests done, RSS MB)

    @property
    def wrong(self) -> list[str]:
        """Every broken promise, in words (empty when all held)."""
        problems = []
        if self.server_errors:
            problems.append(f"{self.server_errors} responses were 5xx")
        if self.incomplete:
            problems.append(f"{self.incomplete} well-formed requests were not answered in full")
        bad = {k: n for k, n in self.statuses.items() if k[0] in MALFORMED and k[0] != "disconnect"
               and not 400 <= k[1] < 500}
        if bad:
            problems.append(f"malformed requests not answered with a 4xx: {bad}")
        if self.transport_errors:
            problems.append(f"{len(self.transport_errors)} transport errors, e.g. {self.transport_errors[0]}")
        return problems


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def malformed_request(kind: str, model: str, context: int, prompt: str) -> tuple[bytes | dict, bool]:
    """(body, streamed) of a malformed request of `kind` (a disconnect is well-formed but left early)."""
    user = [{"role": "user", "content": prompt}]
    return {
        "bad_json": (b'{"model": "' + model.encode() + b'", "messages": [{"role": ', False),
        "wrong_type": ({"model": model, "messages": "hello", "max_tokens": "many"}, False),
        "out_of_range": ({"model": model, "messages": user, "temperature": 7, "top_p": 0}, False),
        "unknown_model": ({"model": "no-such-model", "messages": user}, False),
        "over_long": ({"model": model, "messages": [{"role": "user", "content": "a " * (context + 50)}]}, False),
        "disconnect": ({"model": model, "messages": user, "max_tokens": context // 2, "stream": True,
                        "ignore_eos": True},
                       True),
    }[kind]


async def one_request(client, url: str, kind: str, body, streamed: bool, report: Report) -> None:
    path = "/v1/completions" if isinstance(body, dict) and "prompt" in body else "/v1/chat/completions"
    try:
        if isinstance(body, bytes):
            response = await client.post(url + path, content=body, headers={"content-type": "application/json"})
            return _count(report, kind, response.status_code, True)
        if not streamed:
            response = await client.post(url + path, json=body)
            complete = response.status_code != 200 or bool(response.json().get("choices"))
            return _count(report, kind, response.status_code, complete)
        async with client.stream("POST", url + path, json=body) as response:
            if response.status_code != 200 or kind == "disconnect":
                async for line in response.aiter_lines():  # a client that leaves after the first token
                    if kind == "disconnect" and '"content"' in line:
                        break
                return _count(report, kind, response.status_code, True)
            done = False
            async for line in response.aiter_lines():
                done = done or line == "data: [DONE]"
            _count(report, kind, response.status_code, done)
    except Exception as error:  # recorded: a stress run reports every failure
        report.transport_errors.append(f"{kind}: {type(error).__name__}: {error}")


def _count(report: Report, kind: str, status: int, complete: bool) -> None:
    report.statuses[(kind, status)] += 1
    report.server_errors += status >= 500
    if kind not in MALFORMED and (status != 200 or not complete):
        report.incomplete += 1


async def stress(url: str, pid: int | None, model: str, requests: int, concurrency: int, malformed: float,
                 max_tokens: int, prompts: list[str] | None = None, seed: int = 0) -> Report:
    import httpx

    rng = random.Random(seed)
    models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    context = next(card["max_model_len"] for card in models if card["id"] == model)
    prompts = prompts or [p for p, _ in workload(12)]
    plan = []
    for i in range(requests):
        if rng.random() < malformed:
            kind = MALFORMED[i % len(MALFORMED)]
            body, streamed = malformed_request(kind, model, context, prompts[0])
        else:
            streamed = rng.random() < 0.5
            length = rng.choice([max(1, max_tokens // 4), max(1, max_tokens // 2), max_tokens])
            prompt = rng.choice(prompts)
            if rng.random() < 0.25:
                kind, body = "completion", {"model": model, "prompt": prompt, "max_tokens": length, "stream": streamed}
            else:
                kind, body = "chat", {"model": model, "messages": [{"role": "user", "content": prompt}],
                                      "max_tokens": length, "stream": streamed}
        plan.append((kind, body, streamed))
    report = Report()
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    done = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0),
                                 limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                kind, body, streamed = queue.get_nowait()
                report.sent[kind] += 1
                await one_request(client, url, kind, body, streamed, report)
                done += 1
                if pid and done % max(1, requests // 20) == 0:
                    report.rss_mb.append((done, rss_mb(pid)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return report


def settled(url: str, timeout: float = 60) -> dict[str, float]:
    """The server's metrics once no sequence runs (the ones of clients that left were freed)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line and not line.startswith("#")}
        if values["lmstack_running_sequences"] == 0 or time.monotonic() > deadline:
            return values
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--malformed", type=float, default=0.1)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--kv-cache-mb", type=float, default=1024.0,
                        help="the server's KV budget: RSS grows as blocks are first used, up to this")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_lmstack(args.model, port, args.concurrency, ["--kv-cache-mb", str(args.kv_cache_mb)])
    try:
        wait_healthy(url, process)
        start = time.perf_counter()
        report = asyncio.run(stress(url, process.pid, args.model, args.requests, args.concurrency, args.malformed,
                                    args.max_tokens))
        wall = time.perf_counter() - start
        metrics = settled(url)
        alive = process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=60)
    print(f"{args.requests} requests at concurrency {args.concurrency}, {args.malformed:.0%} malformed, "
          f"in {wall:.0f} s; server alive at the end: {alive}")
    print("requests by kind:", dict(report.sent))
    print("statuses:", {f"{k}:{s}": n for (k, s), n in sorted(report.statuses.items())})
    print(f"5xx: {report.server_errors}; well-formed not answered in full: {report.incomplete}; "
          f"running sequences after: {metrics['lmstack_running_sequences']:g}, KV blocks used after: "
          f"{metrics['lmstack_kv_blocks_used']:g}")
    if report.rss_mb:
        print("RSS MB (requests done: MB):", ", ".join(f"{n}: {mb:.0f}" for n, mb in report.rss_mb))
    problems = report.wrong + ([] if alive else ["the server died"])
    print("ALL HELD" if not problems else "BROKEN: " + "; ".join(problems))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
