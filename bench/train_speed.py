"""LoRA training speed: lmstack vs peft + trl, same weights, data, shapes, LoRA, optimizer and steps.

    python bench/train_speed.py [--steps 10] [--seq-len 256] [--batch-size 8] [--threads N]
                                [--precision fp32|bf16] [--which sft,dpo] [--device auto|cpu|cuda]

Two tasks, each run by both engines on SmolLM2-135M-Instruct (the fp32 HF directory that
`lmstack.load` makes), with LoRA r 16, alpha 32, dropout 0 on every linear layer but lm_head,
torch AdamW at one learning rate and a constant schedule, gradient clipping at 1.0, no gradient
checkpointing, no evaluation, no checkpoints:

    sft  lmstack `train_recipe` (shipped SFT recipe, overridden)  vs  `trl.SFTTrainer` + peft
         data lmstack:identity_train, packed into rows of --seq-len, loss on assistant tokens only
    dpo  lmstack `train_recipe`, sigmoid loss                  vs  `trl.DPOTrainer` + peft
         data lmstack:preferences_train, beta 0.1, reference = the base with adapters off,
         its log-probs computed once before training by both

Each engine runs in its own subprocess (so peak memory is its own) under the same thread count.
Timing: the first optimizer step is a warm-up and is excluded; seconds/step is the time between
the end of step 1 and the end of the last step, divided by the steps in between. Tokens/s counts
the non-padding input tokens of those steps' batches (attention-mask ones, or every token of a
padding-free row), counted the same way for both. Prints a Markdown table with lmstack/peer ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"  # the training template below is this model's
ENGINES = ("lmstack", "trl")
TASKS = ("sft", "dpo")
DPO_BETA = 0.1
MAX_GRAD_NORM = 1.0
SEED = 0
STARTED = time.perf_counter()

# SmolLM2's own chat template with `{% generation %}` markers around what the assistant writes
# (its answer and <|im_end|>), which trl needs for an assistant-only loss. Checked at run time to
# render every training conversation exactly as the model's template does.
SMOLLM2_TRAINING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# --- what is measured, the same way for both engines -------------------------------------------------


class StepClock:
    """End time and non-padding tokens of every optimizer step, and when the first step began."""

    def __init__(self, device: str):
        self.device = device
        self.first_start: float | None = None
        self.step_ends: list[float] = []
        self.step_tokens: list[int] = []
        self._tokens = 0

    def step_started(self) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()
        self._tokens = 0

    def add_tokens(self, count: int) -> None:
        """Non-padding tokens of one micro-batch (lmstack's `real_tokens`, for both engines)."""
        self._tokens += count

    def step_ended(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()  # the step's kernels must have finished before we read the clock
        self.step_ends.append(time.perf_counter())
        self.step_tokens.append(self._tokens)

    def result(self) -> dict:
        """Timings over steps 2..N (step 1 is the warm-up), peak memory of this process."""
        import torch

        timed_steps = len(self.step_ends) - 1
        if timed_steps < 1:
            raise SystemExit(f"only {len(self.step_ends)} steps ran; the benchmark needs at least 2")
        seconds = self.step_ends[-1] - self.step_ends[0]
        tokens = sum(self.step_tokens[1:])
        peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None
        return {"steps_timed": timed_steps, "seconds_per_step": seconds / timed_steps,
                "tokens_per_s": tokens / seconds, "tokens_per_step": tokens / timed_steps,
                "setup_s": (self.first_start or STARTED) - STARTED,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
                "peak_gpu_mib": peak_gpu}


# --- lmstack ------------------------------------------------------------------------------------------


def lmstack_recipe(task: str, args: argparse.Namespace, out_dir: Path):
    """The shipped recipe of the task, with everything the comparison equalizes overridden."""
    from lmstack.train.recipe import load_recipe

    shipped = REPO / "recipes" / ("sft-lora-smollm2.yaml" if task == "sft" else "dpo-lora-smollm2.yaml")
    overrides = {
        "model.ref": args.model_dir, "model.device": args.device, "model.precision": args.precision,
        "model.gradient_checkpointing": False,
        "data.max_len": args.seq_len, "data.val": None, "data.val_fraction": 0.0,
        "method.type": "lora", "method.r": 16, "method.alpha": 32, "method.dropout": 0.0,
        "method.target_modules": "all-linear",
        "optimizer.lr": args.lr, "optimizer.schedule": "constant", "optimizer.warmup_steps": 0,
        "optimizer.weight_decay": 0.0, "optimizer.max_grad_norm": MAX_GRAD_NORM,
        "run.steps": args.steps, "run.batch_size": args.batch_size, "run.grad_accum": 1, "run.eval_every": 0,
        "run.checkpoint_every": 0, "run.log_every": 1, "run.out_dir": str(out_dir), "run.seed": SEED,
    }
    if task == "sft":
        overrides["data.packing"] = True
    else:
        overrides.update({"objective.loss": "sigmoid", "objective.beta": DPO_BETA})
    return load_recipe(shipped, overrides)


def run_lmstack(task: str, args: argparse.Namespace, out_dir: Path, clock: StepClock) -> None:
    """The product's own entry point, `train_recipe`, with the loop's step and
    its token count observed (wrapped, not replaced)."""
    from lmstack.train import core

    take_step, count_tokens = core._Loop._train_step, core.real_tokens

    def timed_step(loop):
        clock.step_started()
        record = take_step(loop)
        clock.step_ended()
        return record

    def counted_tokens(batch):
        count = count_tokens(batch)
        clock.add_tokens(count)
        return count

    core._Loop._train_step, core.real_tokens = timed_step, counted_tokens
    from lmstack.train.run import train_recipe

    train_recipe(lmstack_recipe(task, args, out_dir), overwrite=True)


# --- trl + peft ---------------------------------------------------------------------------------------


def shipped_records(name: str) -> list[dict]:
    """A shipped dataset's records, normalized by lmstack, so both engines see the same messages."""
    from lmstack.data import load_dataset
    from lmstack.train.samples import dataset_path

    return load_dataset(dataset_path(name)).records


def sft_dataset(tokenizer):
    """identity_train as `messages`; the training template must render exactly as the model's own."""
    from datasets import Dataset

    records = [{"messages": r["messages"]} for r in shipped_records("lmstack:identity_train")]
    for record in records:
        own = tokenizer.apply_chat_template(record["messages"], tokenize=False)
        marked = tokenizer.apply_chat_template(record["messages"], tokenize=False,
                                               chat_template=SMOLLM2_TRAINING_TEMPLATE)
        if own != marked:
            raise SystemExit("the generation-marked template no longer matches the model's chat template")
    return Dataset.from_list(records)


def dpo_dataset():
    """preferences_train in trl's conversational form: prompt messages, chosen and rejected turns."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]}
        for r in shipped_records("lmstack:preferences_train")])


def trl_common(args: argparse.Namespace, out_dir: Path) -> dict:
    """TrainingArguments shared by SFTConfig and DPOConfig, matching the lmstack recipe."""
    return dict(
        output_dir=str(out_dir), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, optim="adamw_torch", max_grad_norm=MAX_GRAD_NORM, max_length=args.seq_len,
        activation_checkpointing=False, bf16=args.precision == "bf16", fp16=False, use_cpu=args.device == "cpu",
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none", push_to_hub=False,
        seed=SEED, data_seed=SEED, dataloader_num_workers=0,
    )


def run_trl(task: str, args: argparse.Namespace, out_dir: Path, clock: StepClock) -> None:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from lmstack.train.core import real_tokens

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="sdpa")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")

    class StepEnd(TrainerCallback):
        def on_step_end(self, *_, **__):
            clock.step_ended()

    def counting(trainer_class):
        class Counting(trainer_class):
            def training_step(self, model, inputs, *rest, **kwargs):
                clock.step_started()
                clock.add_tokens(real_tokens(inputs))
                return super().training_step(model, inputs, *rest, **kwargs)

        return Counting

    if task == "sft":
        from trl import SFTConfig, SFTTrainer

        dataset = sft_dataset(tokenizer)
        tokenizer.chat_template = SMOLLM2_TRAINING_TEMPLATE
        config = SFTConfig(**trl_common(args, out_dir), packing=True, packing_strategy="bfd",
                           assistant_only_loss=True)
        trainer = counting(SFTTrainer)(model=model, args=config, train_dataset=dataset,
                                       processing_class=tokenizer, peft_config=lora, callbacks=[StepEnd()])
    else:
        from trl import DPOConfig, DPOTrainer

        config = DPOConfig(**trl_common(args, out_dir), loss_type=["sigmoid"], beta=DPO_BETA,
                           precompute_ref_log_probs=True, precompute_ref_batch_size=args.batch_size)
        trainer = counting(DPOTrainer)(model=model, args=config, train_dataset=dpo_dataset(),
                                       processing_class=tokenizer, peft_config=lora, callbacks=[StepEnd()])
    trainer.train()


# --- one engine in one process --------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Run one (task, engine) and write its measurements as JSON to --result-file."""
    import torch

    torch.set_num_threads(args.threads)
    task, engine = args.worker.split(":")
    clock = StepClock(args.device)
    out_dir = Path(args.result_file).with_suffix(".run")
    (run_lmstack if engine == "lmstack" else run_trl)(task, args, out_dir, clock)
    Path(args.result_file).write_text(json.dumps(clock.result()))


def child_environment(args: argparse.Namespace, scratch: Path) -> dict[str, str]:
    """Same threads for every engine; every cache and registry write goes to the scratch folder."""
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false", "LMSTACK_HOME": str(scratch / "lmstack-home"),
        "HF_HOME": str(scratch / "hf-home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    })
    return env


def run_worker(task: str, engine: str, args: argparse.Namespace, scratch: Path) -> dict | None:
    result_file = scratch / f"{task}-{engine}.json"
    log_file = scratch / f"{task}-{engine}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{task}:{engine}",
               "--model-dir", args.model_dir, "--result-file", str(result_file), "--steps", str(args.steps),
               "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
               "--precision", args.precision, "--device", args.device, "--lr", str(args.lr)]
    print(f"running {task} with {engine} ...", file=sys.stderr, flush=True)
    with open(log_file, "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=child_environment(args, scratch),
                               cwd=scratch)
    if code != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace")[-3000:]
        print(f"{task} with {engine} failed (exit {code}); end of its output:\n{tail}", file=sys.stderr)
        return None
    return json.loads(result_file.read_text())


# --- the report ------------------------------------------------------------------------------------------


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} logical CPUs{gpu}, {platform.system()} {platform.release()}"


def versions() -> str:
    names = ("lmstack", "torch", "transformers", "trl", "peft", "accelerate", "datasets")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def describe(args: argparse.Namespace) -> str:
    common = (f"Both: SmolLM2-135M-Instruct fp32 weights from `lmstack.load(...).path`, LoRA r 16 / alpha 32 / "
              f"dropout 0 on q,k,v,o,gate,up,down (all linear but lm_head), torch AdamW lr {args.lr} (constant, "
              f"no warm-up, no weight decay), grad clip {MAX_GRAD_NORM}, batch {args.batch_size}, grad accum 1, "
              f"{args.steps} steps, precision {args.precision} (bf16 = autocast over fp32 master weights), "
              f"no gradient checkpointing, no eval/checkpoints, {args.threads} threads, device {args.device}.")
    sft = ("SFT: lmstack `train_recipe` packs identity_train best-fit into rows of seq-len tokens (several "
           "conversations per row, attention kept within each by segment ids, positions restart per "
           "conversation, the row's unused tail is padding), loss on assistant tokens only (answer + "
           "<|im_end|>), LM head only on trained positions. trl `SFTTrainer` packs best-fit-decreasing into "
           "seq-len bins and trains padding-free (the batch's bins concatenated into one row; transformers' "
           "sdpa builds the block-diagonal mask from position_ids), `assistant_only_loss` with SmolLM2's own "
           "template plus {% generation %} markers (same text, same trained tokens), LM head only on "
           "labelled positions (trl's fused head).")
    dpo = (f"DPO: sigmoid loss, beta {DPO_BETA}, batch = pairs (chosen and rejected in one forward of "
           f"2 x batch rows, right-padded). Reference = the base with adapters off; both compute its "
           f"log-probs once before step 1 (lmstack always; trl with precompute_ref_log_probs), so no step "
           f"runs a reference forward. Both project the LM head only on completion positions.")
    measure = ("Tokens/s = non-padding input tokens of steps 2..N (attention-mask ones; every token of a "
               "padding-free or packed segment) / their wall time; s/step = time from the end of step 1 to "
               "the end of step N over N-1 (step 1 is warm-up). Setup = process start to first step "
               "(imports, model load, tokenization, packing, reference log-probs). Peak RSS = ru_maxrss of "
               "the engine's own process.")
    return "\n".join(f"- {line}" for line in (common, sft, dpo, measure))


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(ours: float | None, peer: float | None) -> str:
    return "—" if not ours or not peer else f"{ours / peer:.2f}x"


ROWS = (("tokens/s", "tokens_per_s", 1), ("s/step", "seconds_per_step", 3),
        ("tokens/step", "tokens_per_step", 0), ("peak RSS MiB", "peak_rss_mib", 0),
        ("peak GPU MiB", "peak_gpu_mib", 0), ("setup s", "setup_s", 1))


def table(results: dict[tuple[str, str], dict | None]) -> str:
    lines = ["| task | metric | lmstack | peft + trl | lmstack / peer |", "|---|---|---:|---:|---:|"]
    for task in TASKS:
        if (task, "lmstack") not in results:
            continue
        ours, peer = results[(task, "lmstack")] or {}, results[(task, "trl")] or {}
        for label, key, digits in ROWS:
            if ours.get(key) is None and peer.get(key) is None:
                continue
            lines.append(f"| {task.upper()} | {label} | {fmt(ours.get(key), digits)} | {fmt(peer.get(key), digits)} "
                         f"| {ratio(ours.get(key), peer.get(key))} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per engine (>= 2; step 1 is warm-up)")
    parser.add_argument("--seq-len", type=int, default=256, help="packed row length (SFT), max length (DPO)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows (SFT) or pairs (DPO) per step")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--which", default="sft,dpo", help="comma-separated tasks: sft, dpo")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--lr", type=float, default=2e-4)
    for hidden in ("--worker", "--model-dir", "--result-file"):  # set by the parent for its subprocesses
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step is a warm-up and is not timed")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        return worker(args)
    tasks = [t.strip() for t in args.which.split(",") if t.strip()]
    if not tasks or any(t not in TASKS for t in tasks):
        raise SystemExit(f"--which takes a comma-separated list of {', '.join(TASKS)}")
    import lmstack
    import torch

    if args.device == "auto":  # resolved once, so both engines get the same explicit device
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.model_dir = str(lmstack.load(MODEL, device="cpu").path)
    results: dict[tuple[str, str], dict | None] = {}
    with tempfile.TemporaryDirectory(prefix="lmstack-train-bench-") as scratch:
        for task in tasks:
            for engine in ENGINES:
                results[(task, engine)] = run_worker(task, engine, args, Path(scratch))
    print(f"## LoRA training speed: lmstack vs peft + trl ({time.strftime('%Y-%m-%d')})\n")
    print(f"- Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- Machine: {machine()}; threads {args.threads}")
    print(f"- Versions: {versions()}, python {platform.python_version()}")
    print(f"- Shape: seq-len {args.seq_len}, batch {args.batch_size}, {args.steps} steps "
          f"({args.steps - 1} timed)\n")
    print(table(results) + "\n")
    print(describe(args))
    if any(r is None for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
