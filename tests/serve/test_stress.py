"""The must-hold under hostile load, small enough for CI: `lmstack serve` as a real process on the
tiny model, 160 requests at 16 at once, a fifth malformed (bench/serve_stress.py runs 1,000 at 32)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from serve_load import free_port, wait_healthy  # noqa: E402
from serve_stress import MALFORMED, settled, stress  # noqa: E402


def test_malformed_requests_under_load_get_4xx_and_every_good_one_is_answered(tiny_model_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "lmstack.cli", "serve", str(tiny_model_dir), "--port", str(port),
                                "--max-sequences", "16", "--kv-cache-mb", "16", "--served-name", "tiny"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(url, process, timeout=120)
        report = asyncio.run(stress(url, process.pid, "tiny", requests=160, concurrency=16, malformed=0.2,
                                    max_tokens=8, prompts=["a b", "c d a b", "ab cd e", "b a"]))
        metrics = settled(url)
        assert process.poll() is None, "the server died"
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=60)
    assert report.wrong == []
    assert set(MALFORMED) <= set(report.sent), report.sent
    assert report.sent["chat"] + report.sent["completion"] > 100
    assert metrics["lmstack_running_sequences"] == 0 and metrics["lmstack_kv_blocks_used"] == 0
    first, last = report.rss_mb[0][1], report.rss_mb[-1][1]
    assert last < 1.5 * first + 50, report.rss_mb  # memory does not grow with the number of requests
    assert "Traceback" not in errors
