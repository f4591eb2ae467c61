"""`/metrics` in Prometheus' text format: the engine's load and the server's answers.

Gauges come from the engine's own figures (queue, running sequences, KV blocks, tokens/s, mean
time to first token); the server adds what only it sees: requests waiting for admission,
responses by status code, refusals, and a histogram of time to first token as clients see it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Stats:
    """Counts kept by the server (single-threaded: only the event loop touches them)."""

    def __init__(self) -> None:
        self.responses: Counter[int] = Counter()
        self.ttft_buckets = [0] * len(TTFT_BUCKETS)
        self.ttft_count = 0
        self.ttft_sum = 0.0

    def observe_ttft(self, seconds: float) -> None:
        self.ttft_count += 1
        self.ttft_sum += seconds
        for i, bound in enumerate(TTFT_BUCKETS):
            if seconds <= bound:
                self.ttft_buckets[i] += 1


class CountResponses:
    """ASGI middleware: counts responses by status code."""

    def __init__(self, app: Callable, stats: Stats):
        self.app, self.stats = app, stats

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.stats.responses[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def render(engine: Any, waiting_for_admission: int, refused: dict[str, int], failures: int, stats: Stats) -> str:
    """The Prometheus exposition text for the engine's metrics snapshot `engine` and the server's stats."""
    lines: list[str] = []

    def metric(name: str, kind: str, help: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP lmstack_{name} {help}", f"# TYPE lmstack_{name} {kind}"])
        lines.extend(f"lmstack_{name}{labels} {value:g}" for labels, value in samples)

    ttft = engine.time_to_first_token
    metric("queue_length", "gauge", "Requests waiting: for admission by the server, and in the engine's queue.",
           [('{stage="admission"}', waiting_for_admission), ('{stage="engine"}', engine.waiting)])
    metric("running_sequences", "gauge", "Sequences in the engine's running batch.", [("", engine.running)])
    metric("kv_blocks_used", "gauge", "KV cache blocks in use.", [("", engine.kv_blocks_used)])
    metric("kv_blocks_total", "gauge", "KV cache blocks in all.", [("", engine.kv_blocks_total)])
    metric("prefix_cache_hit_rate", "gauge", "Prompt blocks found in the prefix cache / looked up.",
           [("", engine.prefix_cache_hit_rate)])
    metric("tokens_per_second", "gauge", "New tokens per second over the last seconds.",
           [("", engine.tokens_per_second)])
    metric("engine_time_to_first_token_seconds", "gauge", "Mean time to first token of the last 100 requests.",
           [("", ttft if ttft is not None else 0.0)])
    metric("preemptions_total", "counter", "Sequences preempted when the KV cache ran out.", [("", engine.preemptions)])
    metric("engine_failures_total", "counter", "Engine steps that raised (the engine was rebuilt).",
           [("", failures)])
    metric("refused_total", "counter", "Requests refused for load: busy (429) or queue timeout (503).",
           [(f'{{reason="{reason}"}}', count) for reason, count in sorted(refused.items())])
    metric("responses_total", "counter", "HTTP responses by status code.",
           [(f'{{code="{code}"}}', count) for code, count in sorted(stats.responses.items())])
    lines.extend(["# HELP lmstack_time_to_first_token_seconds Time from a request's admission to its first token.",
                  "# TYPE lmstack_time_to_first_token_seconds histogram"])
    for bound, count in zip(TTFT_BUCKETS, stats.ttft_buckets):
        lines.append(f'lmstack_time_to_first_token_seconds_bucket{{le="{bound:g}"}} {count}')
    lines.append(f'lmstack_time_to_first_token_seconds_bucket{{le="+Inf"}} {stats.ttft_count}')
    lines.append(f"lmstack_time_to_first_token_seconds_sum {stats.ttft_sum:g}")
    lines.append(f"lmstack_time_to_first_token_seconds_count {stats.ttft_count}")
    return "\n".join(lines) + "\n"
