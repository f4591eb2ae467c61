"""Merge speed and peak memory: `lmstack merge` vs `mergekit-yaml`, side by side on the same configs.

    python bench/merge_speed.py [--work DIR] [--methods linear,slerp,ties] [--dtype bfloat16]

The inputs are two fine-tunes of SmolLM2-135M-Instruct, made once and cached in --work: a short
LoRA SFT on the shipped identity chats and a short LoRA DPO on the shipped preference pairs, each
folded into the base with `lmstack train merge-adapter` (fp32 Hugging Face folders, 540 MB each).
TIES uses the default model itself (its converted fp32 folder) as the base.

Each merge runs in its own process, one tool after the other per method; wall time is the
whole command (interpreter start, imports, reading, merging, writing) and peak memory is the
process's maximum resident set size. The last column is the largest difference between the two
outputs (bf16 rounding of inputs in mergekit versus float32 arithmetic in lmstack shows up there).
Timings on a shared machine are noisy: compare the ratios, and rerun on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def lmstack(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmstack.cli", *args]


def prepare(work: Path) -> dict[str, Path]:
    """The base (converted folder) and two fine-tunes, made on first use."""
    from lmstack.hub.load import converted_dir
    from lmstack.hub.pull import pull

    models = {"base": converted_dir(pull("smollm2-135m-instruct")), "identity": work / "smollm2-identity",
              "polite": work / "smollm2-polite"}
    runs = {
        "identity": ["train", "sft", "recipes/sft-lora-smollm2.yaml", "--steps", "12"],
        "polite": ["train", "dpo", "recipes/dpo-lora-smollm2.yaml", "--steps", "8", "--lr", "2e-4",
                   "--warmup_steps", "1"],
    }
    for name, command in runs.items():
        if (models[name] / "model.safetensors").is_file():
            continue
        run_dir = work / f"run-{name}"
        print(f"making fine-tune '{name}' (once): lmstack {' '.join(command)}", flush=True)
        subprocess.run(lmstack(*command, "--out_dir", str(run_dir), "--eval_every", "0", "--checkpoint_every", "0",
                               "--overwrite"), check=True, cwd=ROOT)
        subprocess.run(lmstack("train", "merge-adapter", "smollm2-135m-instruct", str(run_dir / "adapter"),
                               str(models[name])), check=True, cwd=ROOT)
    return models


def configs(models: dict[str, Path], dtype: str) -> dict[str, dict]:
    """The LazyMergekit-style configs of each method (the same file goes to both tools)."""
    a, b, base = (str(models[k]) for k in ("identity", "polite", "base"))
    layers = 30
    return {
        "linear": {"merge_method": "linear", "dtype": dtype,
                   "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.5}}]},
        "slerp": {"merge_method": "slerp", "base_model": a, "dtype": dtype,
                  "slices": [{"sources": [{"model": a, "layer_range": [0, layers]},
                                          {"model": b, "layer_range": [0, layers]}]}],
                  "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                                       {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}},
        "ties": {"merge_method": "ties", "base_model": base, "dtype": dtype, "parameters": {"normalize": True},
                 "models": [{"model": a, "parameters": {"density": 0.5, "weight": 0.5}},
                            {"model": b, "parameters": {"density": 0.5, "weight": 0.5}}]},
    }


def measure(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one command in its own process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def largest_difference(first: Path, second: Path) -> float:
    from safetensors.torch import load_file

    ours = load_file(first / "model.safetensors")
    theirs = {}
    for file in second.glob("*.safetensors"):
        theirs.update(load_file(file))
    return max((ours[name].float() - theirs[name].float()).abs().max().item() for name in ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "lmstack-bench" / "merge")
    parser.add_argument("--methods", default="linear,slerp,ties")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args()
    if shutil.which("mergekit-yaml") is None:
        raise SystemExit("mergekit is not installed: pip install mergekit (the test extra has it)")
    args.work.mkdir(parents=True, exist_ok=True)
    models = prepare(args.work)
    rows = []
    for method in args.methods.split(","):
        config_path = args.work / f"{method}.yaml"
        config_path.write_text(yaml.safe_dump(configs(models, args.dtype)[method], sort_keys=False))
        ours_dir, theirs_dir = args.work / f"out-lmstack-{method}", args.work / f"out-mergekit-{method}"
        ours = measure(lmstack("merge", str(config_path), str(ours_dir), "--overwrite", "--device", "cpu"))
        theirs = measure(["mergekit-yaml", str(config_path), str(theirs_dir), "--copy-tokenizer"])
        rows.append((method, *ours, *theirs, largest_difference(ours_dir, theirs_dir)))
        print(f"{method}: lmstack {ours[0]:.1f} s {ours[1]:.0f} MB, mergekit {theirs[0]:.1f} s {theirs[1]:.0f} MB",
              flush=True)
    print(f"\nSmolLM2-135M fine-tunes, dtype {args.dtype}, CPU\n")
    print("| method | lmstack s | mergekit s | time ratio | lmstack peak MB | mergekit peak MB | memory ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for method, our_s, our_mb, their_s, their_mb, diff in rows:
        print(f"| {method} | {our_s:.1f} | {their_s:.1f} | {our_s / their_s:.2f} | {our_mb:.0f} | {their_mb:.0f} | "
              f"{our_mb / their_mb:.2f} | {diff:.2g} |")


if __name__ == "__main__":
    main()
