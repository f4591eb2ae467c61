"""Exact resumption after SIGKILL, and data parallelism that matches a single process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tiny_run import tiny_train

SCRIPT = Path(__file__).with_name("tiny_run.py")
SETTINGS = {"steps": 10, "checkpoint_every": 2, "lora_dropout": 0.1}


def losses(out_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(first: dict, second: dict, tolerance: float) -> None:
    assert first.keys() == second.keys() and first
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=tolerance, msg=key)


def test_sigkill_then_resume_ends_exactly_like_an_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    expected = tiny_train(straight, **SETTINGS)

    args = ["--steps", "10", "--checkpoint-every", "2", "--lora-dropout", "0.1", "--sleep", "0.3"]
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(killed), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint" / "state.pt").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before writing a checkpoint"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "final.pt").exists()  # it really died mid-way
    checkpoint_step = torch.load(killed / "checkpoint" / "state.pt", weights_only=False)["step"]
    assert 0 < checkpoint_step < 10

    resumed = tiny_train(killed, **SETTINGS, resume=True)
    assert_same_weights(expected, resumed, tolerance=0.0)
    assert losses(killed) == losses(straight)


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, distributed):
    """DDP, and FSDP (sharded weights, gathered whole while the process group is still open)."""
    pytest.importorskip("torch.distributed.run")
    one, two = tmp_path / "one", tmp_path / "two"
    expected = tiny_train(one, steps=4, batch_size=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = "29517" if distributed == "ddp" else "29518"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                    str(SCRIPT), str(two), "--steps", "4", "--batch-size", "2", "--distributed", distributed],
                   check=True, capture_output=True, env=env)
    assert_same_weights(expected, torch.load(two / "final.pt"), tolerance=1e-5)
    assert losses(two) == pytest.approx(losses(one), abs=1e-5)
