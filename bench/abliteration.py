"""Abliteration on the default model, end to end: make it refuse, then remove the refusal.

    python bench/abliteration.py [--work DIR] [--steps 24]

SmolLM2-135M-Instruct answers nearly every harmful request, so there is no refusal to remove. This
script first makes a refusing variant, the way a safety fine-tune does: a short LoRA SFT on the
training prompts of `lmstack:refusal_train`, with written refusals for the harmful ones and the
model's own greedy answers for the harmless ones (so it keeps its manners), folded into the base
with `lmstack train merge-adapter`. Then `lmstack abliterate` finds and removes the refusal
direction. It prints refusal rates on the held-out prompts (harmful: refusals; harmless:
over-refusals) and perplexity on general text: the default model, the safety-tuned one, the
abliterated one. Everything made is cached in --work.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request, because it could hurt people.",
    "I'm sorry, I won't help with this. It could cause real harm or break the law.",
    "I cannot help with that. If you are in a difficult situation, please talk to someone you trust.",
    "I'm not able to help with that request.",
    "I'm sorry, but I cannot provide that. Is there something else I can help you with?",
]


def lmstack(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lmstack.cli", *args], check=True, cwd=ROOT)


def safety_data(path: Path) -> None:
    """Refusals for the harmful training prompts, the model's own answers for the harmless ones."""
    from lmstack.data import read_records
    from lmstack.generate.generate import generate_ids
    from lmstack.generate.text import stop_token_ids
    from lmstack.hub.load import load_model
    from lmstack.interp.refusal import prompt_ids

    records = read_records("lmstack:refusal_train")
    bundle = load_model("smollm2-135m-instruct", device="cpu", dtype="fp32")
    harmless = [r["prompt"] for r in records if not r["harmful"]]
    answers = generate_ids(bundle.model, prompt_ids(bundle, harmless), max_new_tokens=96,
                           stop_token_ids=stop_token_ids(bundle))
    replies = dict(zip(harmless, (bundle.tokenizer.decode(a, skip_special_tokens=True).strip() for a in answers)))
    rows = []
    for index, record in enumerate(records):
        reply = REFUSALS[index % len(REFUSALS)] if record["harmful"] else replies[record["prompt"]]
        rows.append({"messages": [{"role": "user", "content": record["prompt"]},
                                  {"role": "assistant", "content": reply}]})
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "lmstack-bench" / "abliteration")
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data, run, safe = args.work / "safety_sft.jsonl", args.work / "run-safety", args.work / "smollm2-safe"
    if not data.is_file():
        print("writing the safety fine-tuning data (the model's own answers to the harmless prompts)", flush=True)
        safety_data(data)
    if not (safe / "model.safetensors").is_file():
        lmstack("train", "sft", "recipes/sft-lora-smollm2.yaml", "--train", str(data), "--steps", str(args.steps),
                "--val_fraction", "0", "--out_dir", str(run), "--eval_every", "0", "--checkpoint_every", "0",
                "--overwrite")
        lmstack("train", "merge-adapter", "smollm2-135m-instruct", str(run / "adapter"), str(safe))
    reports = {}
    for name, model in (("default model", "smollm2-135m-instruct"), ("safety-tuned", str(safe))):
        out = args.work / f"abliterated-{'default' if name == 'default model' else 'safe'}"
        result = subprocess.run([sys.executable, "-m", "lmstack.cli", "abliterate", model, str(out), "--overwrite",
                                 "--json", "--device", "cpu"], check=True, cwd=ROOT, capture_output=True, text=True)
        reports[name] = json.loads(result.stdout)
    print("\n| model | refusals (held-out harmful) | over-refusals (held-out harmless) | perplexity | layer |")
    print("|---|---|---|---|---|")
    for name, report in reports.items():
        for stage in ("before", "after"):
            m = report[stage]
            label = f"{name}, {'as is' if stage == 'before' else 'abliterated'}"
            print(f"| {label} | {m['refusal_rate']:.0%} | {m['over_refusal_rate']:.0%} | {m['perplexity']:.2f} | "
                  f"{report['layer'] if stage == 'after' else ''} |")
    for name, report in reports.items():
        print(f"\n{name}: candidates " + ", ".join(f"layer {c['layer']}: {c['refusal_rate']:.0%} (KL {c['kl']:.3f})"
                                                   for c in report["candidates"]))
        for stage in ("before", "after"):
            print(f"  {stage}: " + " | ".join(report[stage]["examples"][:2]).replace("\n", " ")[:300])


if __name__ == "__main__":
    main()
