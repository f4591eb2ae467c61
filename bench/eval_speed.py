"""Multiple-choice scoring speed: lmstack vs lm-evaluation-harness's `hf` backend, same weights.

    python bench/eval_speed.py [--cases lmstack_mc:0,lmstack_complete:0,lmstack_complete:5] [--limit N]
                               [--batch-size 8] [--threads 2] [--dtype fp32]

A case is TASK:FEWSHOT. For each, two measurements side by side in this run:
- requests/s: every (context, continuation) request of the task, scored in one process per engine
  (tokenization included): lmstack's `score_requests` vs the harness's `HFLM.loglikelihood` at the
  same batch size, after a warm-up batch; the accuracy of both is checked to be equal. CPU seconds
  are printed too: on a busy machine they say more than wall time.
- whole-process wall time: `lmstack eval run MODEL --tasks TASK` vs `lm_eval --model hf ...` as
  a user runs them, start to finish (imports, model load, scoring, results).
Prints a Markdown table and the ratios.

lmstack_mc's choices are mostly one token, which the harness already scores with one row per
question (its one-token logits cache), so there lmstack saves only the unused logits;
lmstack_complete's choices are whole phrases, the shape of most multiple-choice benchmarks, where
running the shared context once pays, the more so with few-shot examples in the context.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import yaml

MODEL = "smollm2-135m-instruct"


def task_file(task: str, folder: Path) -> Path:
    """The shipped task with absolute data paths, which the harness needs."""
    from lmstack.eval.task import SHIPPED_TASKS

    config = yaml.safe_load((SHIPPED_TASKS / f"{task}.yaml").read_text())
    files = config["dataset_kwargs"]["data_files"]
    config["dataset_kwargs"]["data_files"] = {split: str(SHIPPED_TASKS / f) for split, f in files.items()}
    path = folder / f"{task}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def scoring_child(engine: str, args: argparse.Namespace, yaml_path: Path, model_dir: str) -> dict:
    """Runs in its own process: score every request of the task with one engine, timed."""
    import torch

    torch.set_num_threads(args.threads)
    from lmstack.eval.metrics import multiple_choice_scores
    from lmstack.eval.task import load_task

    prompts = load_task(yaml_path).prompts(limit=args.limit, num_fewshot=args.num_fewshot)
    pairs = [(p.context, c) for p in prompts for c in p.continuations]
    if engine == "lmstack":
        from lmstack.eval.likelihood import score_requests
        from lmstack.eval.run import encode_pair
        from lmstack.hub.load import load_model

        bundle = load_model(model_dir, device="cpu", dtype=args.dtype)

        def score(batch):
            requests = [encode_pair(bundle.tokenizer, context, continuation) for context, continuation in batch]
            return [ll for ll, _ in score_requests(bundle.model, requests, batch_size=args.batch_size)]
    else:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model_dir, dtype={"fp32": "float32", "bf16": "bfloat16"}[args.dtype],
                  batch_size=args.batch_size, device="cpu")

        def score(batch):
            instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(batch)]
            return [ll for ll, _ in lm.loglikelihood(instances, disable_tqdm=True)]

    score(pairs[: 2 * args.batch_size])  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    lls = score(pairs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    position, accuracy = 0, []
    for p in prompts:
        accuracy.append(multiple_choice_scores(lls[position : position + len(p.choices)], p.choices, p.target)["acc"])
        position += len(p.choices)
    return {"requests": len(pairs), "seconds": seconds, "cpu": cpu, "acc": sum(accuracy) / len(accuracy)}


def timed_process(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def run_case(task: str, shots: int, args: argparse.Namespace, model_dir: str, folder: Path,
             env: dict[str, str]) -> tuple[dict, dict]:
    yaml_path = task_file(task, folder)
    limit = ["--limit", str(args.limit)] if args.limit else []
    scoring = {}
    for engine in ("lmstack", "lm-eval"):
        command = [sys.executable, __file__, "--child", engine, "--yaml", str(yaml_path), "--model-dir", model_dir,
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--dtype", args.dtype,
                   "--num-fewshot", str(shots), *limit]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{engine} scoring failed:\n{done.stderr[-3000:]}")
        scoring[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    bin_dir = Path(sys.executable).parent
    hf_dtype = "float32" if args.dtype == "fp32" else "bfloat16"
    wall = {
        "lmstack": timed_process([str(bin_dir / "lmstack"), "eval", "run", model_dir, "--tasks", str(yaml_path),
                                  "--batch-size", str(args.batch_size), "--dtype", args.dtype, "--num-fewshot",
                                  str(shots), "--output", str(folder / f"ours-{task}-{shots}"), "--json", *limit], env),
        "lm-eval": timed_process([str(bin_dir / "lm_eval"), "--model", "hf", "--model_args",
                                  f"pretrained={model_dir},dtype={hf_dtype}", "--tasks", str(yaml_path),
                                  "--batch_size", str(args.batch_size), "--device", "cpu", "--num_fewshot",
                                  str(shots), *limit], env),
    }
    return scoring, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="lmstack_mc:0,lmstack_complete:0,lmstack_complete:5",
                        help="comma-separated TASK:FEWSHOT")
    parser.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--num-fewshot", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("lmstack", "lm-eval"), help=argparse.SUPPRESS)
    parser.add_argument("--yaml", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(scoring_child(args.child, args, Path(args.yaml), args.model_dir)))
        return

    from lmstack.device import describe_cpu
    from lmstack.hub.load import converted_dir
    from lmstack.hub.pull import pull

    model_dir = str(converted_dir(pull(MODEL)))  # the same fp32 weights for both engines
    folder = Path(tempfile.mkdtemp(prefix="eval-speed-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(folder / "hf-datasets"), "TOKENIZERS_PARALLELISM": "false"}
    print(f"machine: {describe_cpu()}, {args.threads} threads; torch {metadata.version('torch')}, "
          f"transformers {metadata.version('transformers')}, lm-eval {metadata.version('lm_eval')}; "
          f"{MODEL}, batch {args.batch_size}, {args.dtype}\n")
    print("| task | shots | engine | requests | scoring s | CPU s | requests/s | acc | process wall s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for case in args.cases.split(","):
        task, shots = case.split(":")
        scoring, wall = run_case(task, int(shots), args, model_dir, folder, env)
        for engine in ("lmstack", "lm-eval"):
            s = scoring[engine]
            print(f"| {task} | {shots} | {engine} | {s['requests']} | {s['seconds']:.2f} | {s['cpu']:.2f} | "
                  f"{s['requests'] / s['seconds']:.1f} | {s['acc']:.4f} | {wall[engine]:.1f} |", flush=True)
        ours, theirs = scoring["lmstack"], scoring["lm-eval"]
        ratios.append(f"{task} {shots}-shot: requests/s {theirs['seconds'] / ours['seconds']:.2f}x "
                      f"(CPU {theirs['cpu'] / ours['cpu']:.2f}x), process wall {wall['lmstack'] / wall['lm-eval']:.2f}x, "
                      f"same accuracy {ours['acc'] == theirs['acc']}")
    print("\nlmstack / lm-eval (targets: requests/s >= 2x, process wall <= 0.5x):")
    for line in ratios:
        print(f"- {line}")


if __name__ == "__main__":
    main()
