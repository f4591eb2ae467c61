"""`lmstack eval run`: score a model on lm-evaluation-harness tasks, resumably.

Every task is loaded and every document rendered before the model loads. Each document's output
(log-likelihoods or generated text) is appended to `samples/<task>.jsonl` in the run folder as
soon as it is computed; a run that is stopped resumes from those files. When a task finishes its
scores go into `results.json` (rewritten atomically) and into the registry against the model,
with the task's content hash, the settings and the seed.

Without `--output` the run folder is `<lmstack home>/eval/<model>-<key>`, the key a hash of the
model, the tasks and the settings, so the same command run again resumes (or reuses) that run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from lmstack.errors import LmstackError
from lmstack.eval.likelihood import Request, rolling_windows, score_requests
from lmstack.eval.metrics import task_results
from lmstack.eval.scores import record_score
from lmstack.eval.task import FEWSHOT_SEED, Prompt, Task, load_tasks
from lmstack.home import atomic_write_text, check_output, lmstack_home
from lmstack.hub.load import ModelBundle, load_model

Progress = Callable[[str, int, int], None]  # (task, documents done, documents in the task)


@dataclass(frozen=True)
class EvalSettings:
    """Everything besides the model and the tasks that decides the scores."""

    num_fewshot: int | None = None  # None: each task's own num_fewshot
    limit: float | None = None  # documents per task: a count, or a fraction below 1
    batch_size: int = 16
    apply_chat_template: bool = False
    seed: int = FEWSHOT_SEED  # few-shot draws, sampled generation, bootstrap
    bootstrap_iters: int = 1000
    window: int = 2048  # rolling perplexity: tokens per window ...
    stride: int = 1024  # ... and how far it advances

    def check(self) -> None:
        checks = [
            (self.num_fewshot is None or self.num_fewshot >= 0, f"num_fewshot must be >= 0, got {self.num_fewshot}"),
            (self.limit is None or self.limit > 0, f"limit must be > 0, got {self.limit}"),
            (1 <= self.batch_size <= 4096, f"batch_size must be in 1..4096, got {self.batch_size}"),
            (0 <= self.bootstrap_iters <= 100_000, f"bootstrap_iters must be in 0..100000, got {self.bootstrap_iters}"),
            (2 <= self.window and 1 <= self.stride <= self.window,
             f"rolling windows need window >= 2 and 1 <= stride <= window, got {self.window} and {self.stride}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LmstackError(message)


def evaluate(model: str, tasks: str, *, settings: EvalSettings = EvalSettings(), adapter: str | Path | None = None,
             device: str | None = None, dtype: str | None = None, output: str | Path | None = None,
             overwrite: bool = False, resume: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Scores of `model` on `tasks` (comma-separated names, YAML files or folders), as the harness
    prints them: `{"results": {task: {metric: value, metric_stderr: s}}, "config": {...}}`.

    Tasks, settings and the output folder are checked before the model loads.
    """
    settings.check()
    loaded_tasks = load_tasks(tasks)
    if output is not None and not (resume and (Path(output) / "run.json").is_file()):
        check_output(output, overwrite=overwrite, directory=True)
    bundle = load_model(model, device=device, dtype=dtype, adapter=adapter)
    return evaluate_bundle(bundle, loaded_tasks, settings=settings, output=output, overwrite=overwrite,
                           progress=progress)


def evaluate_bundle(bundle: ModelBundle, tasks: list[Task], *, settings: EvalSettings = EvalSettings(),
                    output: str | Path | None = None, overwrite: bool = False,
                    progress: Progress | None = None) -> dict[str, Any]:
    """`evaluate` for a model already loaded; a run already in `output` is resumed."""
    config = _run_config(bundle, tasks, settings)
    folder = Path(output) if output is not None else _default_folder(bundle, config)
    _open_run_folder(folder, config, overwrite=overwrite)
    results = _read_json(folder / "results.json") or {"results": {}, "n-samples": {}}
    for task in tasks:
        if task.name in results["results"]:
            continue  # finished (and recorded) by an earlier run in this folder
        prompts = task.prompts(num_fewshot=settings.num_fewshot, limit=settings.limit, seed=settings.seed,
                               chat=_chat(bundle) if settings.apply_chat_template else None)
        outputs = _task_outputs(bundle, task, prompts, settings, folder, progress)
        scores = task_results(task, prompts, outputs, bootstrap_iters=settings.bootstrap_iters, seed=settings.seed)
        results["results"][task.name] = scores
        results["n-samples"][task.name] = {"original": len(task.docs), "effective": len(prompts)}
        atomic_write_text(folder / "results.json", json.dumps(results, indent=2))
        _record(bundle, task, scores, config, len(prompts))
    return {"results": {t.name: results["results"][t.name] for t in tasks},
            "n-samples": {t.name: results["n-samples"][t.name] for t in tasks},
            "config": config, "output": str(folder)}


def _run_config(bundle: ModelBundle, tasks: list[Task], settings: EvalSettings) -> dict[str, Any]:
    return {"model": bundle.name, "model_id": bundle.lineage_id(), "model_path": str(bundle.source or bundle.path),
            "adapter": str(bundle.adapter) if bundle.adapter else None,
            "dtype": str(next(bundle.model.parameters()).dtype).removeprefix("torch."), "device": str(bundle.device),
            "tasks": {t.name: {"hash": t.content_hash, "source": t.reference} for t in tasks}, **asdict(settings)}


def _default_folder(bundle: ModelBundle, config: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return lmstack_home() / "eval" / f"{bundle.name.replace('/', '_')}-{key}"


def _open_run_folder(folder: Path, config: dict[str, Any], *, overwrite: bool) -> None:
    """Create the run folder, or check that the run it holds is this one (then it resumes)."""
    if overwrite and folder.exists():
        shutil.rmtree(folder)
    existing = _read_json(folder / "run.json")
    if existing is None:
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "run.json", json.dumps(config, indent=2))
        return
    differs = sorted(k for k in config if k != "tasks" and existing.get(k) != config[k])
    changed = sorted(name for name, task in config["tasks"].items()
                     if name in existing.get("tasks", {}) and existing["tasks"][name] != task)
    if differs or changed:
        what = ", ".join(differs) or f"task {changed[0]} (its file or data changed)"
        raise LmstackError(f"{folder} holds a run with a different {what}; pass --overwrite to start again, "
                           "or another --output")
    existing["tasks"] = {**existing.get("tasks", {}), **config["tasks"]}
    (folder / "samples").mkdir(exist_ok=True)
    atomic_write_text(folder / "run.json", json.dumps(existing, indent=2))


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LmstackError(f"{path} is damaged; pass --overwrite to start the run again") from None


def _chat(bundle: ModelBundle) -> Callable[[list[dict[str, str]]], str]:
    if bundle.tokenizer.chat_template is None:
        raise LmstackError(f"{bundle.name} has no chat template; drop --apply-chat-template")
    return lambda messages: bundle.tokenizer.apply_chat_template(messages, add_generation_prompt=True)


# --- computing outputs, document by document ---------------------------------------------------


class _Samples:
    """`samples/<task>.jsonl`: one line per finished document, appended and flushed as it finishes."""

    def __init__(self, folder: Path, task: Task, total: int, progress: Progress | None):
        self.path = folder / "samples" / f"{task.name}.jsonl"
        self.task, self.total, self.progress = task.name, total, progress
        self.done: dict[int, Any] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the last line of a run killed mid-write
                    continue
                self.done[row["doc"]] = row["output"]
        self.file = open(self.path, "a", encoding="utf-8")

    def add(self, index: int, output: Any) -> None:
        self.done[index] = output
        self.file.write(json.dumps({"doc": index, "output": output}, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        if self.progress is not None:
            self.progress(self.task, len(self.done), self.total)

    def close(self) -> None:
        self.file.close()


def _task_outputs(bundle: ModelBundle, task: Task, prompts: list[Prompt], settings: EvalSettings, folder: Path,
                  progress: Progress | None) -> list[Any]:
    samples = _Samples(folder, task, len(prompts), progress)
    try:
        todo = [p for p in prompts if p.index not in samples.done]
        if todo and task.output_type == "generate_until":
            _generate(bundle, task, todo, settings, samples)
        elif todo:
            _score(bundle, task, todo, settings, samples)
        samples.flush()
    finally:
        samples.close()
    return [samples.done[p.index] for p in prompts]


def _score(bundle: ModelBundle, task: Task, prompts: list[Prompt], settings: EvalSettings, samples: _Samples) -> None:
    """Log-likelihood tasks: every document's requests scored in length-sorted batches."""
    requests: list[Request] = []
    owners: list[tuple[Prompt, int]] = []  # (document, position among its requests)
    counts: dict[int, int] = {}  # requests of each document not scored yet
    for prompt in prompts:
        document_requests = _requests(bundle, task, prompt, settings)
        requests += document_requests
        owners += [(prompt, position) for position in range(len(document_requests))]
        counts[prompt.index] = len(document_requests)
    partial: dict[int, list] = {index: [None] * count for index, count in counts.items()}

    def on_scored(indices: list[int], scores: list[tuple[float, bool]]) -> None:
        for i, score in zip(indices, scores):
            prompt, position = owners[i]
            partial[prompt.index][position] = score
            counts[prompt.index] -= 1
            if counts[prompt.index] == 0:
                samples.add(prompt.index, _document_output(task, partial.pop(prompt.index)))
        samples.flush()

    score_requests(bundle.model, requests, batch_size=settings.batch_size, on_scored=on_scored)


def _requests(bundle: ModelBundle, task: Task, prompt: Prompt, settings: EvalSettings) -> list[Request]:
    tokenizer = bundle.tokenizer
    if task.output_type == "loglikelihood_rolling":
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ids = [prefix, *tokenizer.encode(str(prompt.target), add_special_tokens=False)]
        window = min(settings.window, bundle.config.max_position_embeddings)
        return rolling_windows(ids, window=window, stride=min(settings.stride, window))
    if task.output_type == "loglikelihood":
        return [encode_pair(tokenizer, prompt.context, str(prompt.target))]
    contexts = prompt.context if isinstance(prompt.context, list) else [prompt.context] * len(prompt.continuations)
    continuations = prompt.continuations * len(contexts) if len(prompt.continuations) == 1 else prompt.continuations
    return [encode_pair(tokenizer, context, continuation) for context, continuation in zip(contexts, continuations)]


def _document_output(task: Task, scores: list[tuple[float, bool]]) -> Any:
    if task.output_type == "loglikelihood_rolling":
        return sum(logprob for logprob, _ in scores)
    if task.output_type == "loglikelihood":
        return list(scores[0])
    return [list(score) for score in scores]


def encode_pair(tokenizer: Any, context: str, continuation: str) -> Request:
    """Token ids of (context, continuation) as the harness splits them: spaces at the end of the
    context move to the continuation, and the continuation is what encoding the whole adds."""
    if not context:
        ids = tokenizer.encode(continuation, add_special_tokens=False)
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return ([prefix], ids) if ids[:1] != [prefix] else (ids[:1], ids[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = encode_text(tokenizer, context)
    whole = encode_text(tokenizer, context + continuation)
    return context_ids, whole[len(context_ids):]


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """The model's encoding of `text`; a text that already starts with BOS (a chat template wrote
    it) does not get a second one."""
    bos = tokenizer.special_tokens.get("bos_token")
    return tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos)))


def _generate(bundle: ModelBundle, task: Task, prompts: list[Prompt], settings: EvalSettings,
              samples: _Samples) -> None:
    """Generation tasks: batches of similar length through the generation engine, greedy by default."""
    from lmstack.generate.text import generate_text

    kwargs = task.generation_kwargs
    sampling = {k: kwargs[k] for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "num_beams")
                if k in kwargs}
    if not kwargs.get("do_sample", False):
        sampling["temperature"] = 0.0
    ordered = sorted(prompts, key=lambda p: -len(encode_text(bundle.tokenizer, p.context)))
    # With a chat template the engine formats the system and user turns itself; a batch shares its system turn.
    batches: dict[str | None, list[Prompt]] = {}
    for prompt in ordered:
        system = prompt.messages[0]["content"] if prompt.messages and len(prompt.messages) == 2 else None
        batches.setdefault(system, []).append(prompt)
    for system, group in batches.items():
        for start in range(0, len(group), settings.batch_size):
            batch = group[start : start + settings.batch_size]
            texts = [p.messages[-1]["content"] if p.messages else p.context for p in batch]
            results = generate_text(bundle, texts, system=system, raw=not batch[0].messages,
                                    max_new_tokens=int(kwargs.get("max_gen_toks", 256)), stop=kwargs["until"],
                                    seed=settings.seed, **sampling)
            for prompt, result in zip(batch, results):
                samples.add(prompt.index, result.text)
            samples.flush()


def _record(bundle: ModelBundle, task: Task, scores: dict[str, float | None], config: dict[str, Any],
            samples: int) -> None:
    """Each metric into the registry, as `TASK/METRIC`, with its standard error and how it was measured."""
    settings = {k: v for k, v in config.items() if k not in ("model", "model_id", "model_path", "tasks")}
    for key, value in scores.items():
        if "_stderr" in key or value is None:
            continue
        record_score(bundle, f"{task.name}/{key}", value, task.reference, settings, sha256=task.content_hash,
                     stderr=scores.get(key.replace(",", "_stderr,", 1) if "," in key else f"{key}_stderr"),
                     samples=samples, seed=config["seed"], task=task.name)
