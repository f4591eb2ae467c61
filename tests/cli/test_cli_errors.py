"""Bad input through the real `lmstack` command: one clear line on stderr, exit 1, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_cli(*args: str, home) -> subprocess.CompletedProcess:
    env = {"LMSTACK_HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "lmstack.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def assert_clean_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr


@pytest.mark.parametrize("args, expected", [
    (["generate", "no-such-model", "hi"], "is not a model lmstack knows"),
    (["generate", "/nonexistent/model.gguf", "hi"], "does not exist"),
    (["registry", "show", "m-00000000"], "m-00000000"),
    (["train", "sft", "/nonexistent/recipe.yaml"], "recipe.yaml"),
])
def test_bad_references_fail_cleanly(args, expected, tmp_path):
    assert_clean_error(run_cli(*args, home=tmp_path), expected)


@pytest.mark.real
def test_truncated_gguf_fails_cleanly(tmp_path, smollm2_gguf):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_gguf.read_bytes()[:3_000_000])
    assert_clean_error(run_cli("generate", str(cut), "hi", home=tmp_path), "truncated")


@pytest.mark.real
def test_bad_sampling_values_and_long_prompts_fail_cleanly(tmp_path, smollm2_gguf):
    assert_clean_error(run_cli("generate", str(smollm2_gguf), "hi", "--top-p", "1.5", home=tmp_path),
                       "top_p must be in (0, 1], got 1.5")
    long_prompt = "word " * 9000  # the context window is 8192 tokens
    assert_clean_error(run_cli("generate", str(smollm2_gguf), long_prompt, "--raw", home=tmp_path),
                       "context window is 8192")
