"""Tasks in lm-evaluation-harness's YAML format, read without lm-eval, so a user's task files run
unchanged when their data is on disk.

A task names its data (`dataset_path: json|csv|parquet|text` with `dataset_kwargs.data_files`, or
a local folder), its splits, how a document becomes a prompt (`doc_to_text`), a target
(`doc_to_target`) and choices (`doc_to_choice`) — each a column name or a Jinja template — and an
`output_type`: `multiple_choice`, `generate_until`, `loglikelihood` or `loglikelihood_rolling`.
Prompts are built exactly as the harness builds them (few-shot examples drawn with the same
seeded sampler, the same delimiters), so the same model scores the same.

lmstack runs no Python from task files: `!function` is refused; `process_docs` may be a mapping
of new fields to Jinja templates or column names. Relative data paths resolve against the YAML's
folder first, then the working directory. Everything — templates on every document included —
is checked here, before any model loads.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml

from lmstack.data import read_records
from lmstack.errors import LmstackError
from lmstack.inputs import check_dir, check_file, read_text

SHIPPED_TASKS = Path(__file__).parent / "tasks"  # the tasks lmstack ships
OUTPUT_TYPES = ("multiple_choice", "generate_until", "loglikelihood", "loglikelihood_rolling")
DEFAULT_METRICS = {
    "multiple_choice": ["acc", "acc_norm"],
    "generate_until": ["exact_match"],
    "loglikelihood": ["perplexity", "acc"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
}
BUILDERS = {"json": (".jsonl", ".json"), "csv": (".csv",), "parquet": (".parquet",), "text": (".txt",)}
FILTERS = ("regex", "take_first", "lowercase", "uppercase", "remove_whitespace", "map")
SAMPLERS = ("default", "first_n")
GENERATION_KEYS = ("until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k", "min_p",
                   "repetition_penalty", "num_beams")
FEWSHOT_SEED = 1234  # the harness's default few-shot seed

# Keys that change nothing about the scores here (grouping, bookkeeping, hub subsets).
IGNORED_KEYS = {"tag", "group", "task_alias", "metadata", "dataset_name", "should_decontaminate",
                "doc_to_decontamination_query", "repeats", "include"}
KEYS = IGNORED_KEYS | {
    "task", "dataset_path", "training_split", "dataset_kwargs", "validation_split", "test_split", "fewshot_split", "process_docs",
    "doc_to_text", "doc_to_target", "doc_to_choice", "description", "target_delimiter", "fewshot_delimiter",
    "fewshot_config", "num_fewshot", "metric_list", "output_type", "generation_kwargs", "filter_list",
}
# Keys lmstack does not implement; refusing beats scoring something else than the user meant.
UNSUPPORTED_KEYS = {"process_results": "custom Python scoring", "use_prompt": "promptsource prompts",
                    "doc_to_image": "images", "doc_to_audio": "audio", "custom_dataset": "Python datasets",
                    "gen_prefix": "generation prefixes", "unsafe_code": "code execution"}


class _Function(str):
    """A `!function module.name` value: Python lmstack will not run."""


class _TaskLoader(yaml.SafeLoader):
    pass


_TaskLoader.add_constructor("!function", lambda loader, node: _Function(loader.construct_scalar(node)))


@dataclass
class Filter:
    name: str
    steps: list[dict[str, Any]]

    def apply(self, response: str) -> str:
        for step in self.steps:
            response = _filter_step(step, response)
        return response


@dataclass
class Metric:
    name: str
    options: dict[str, Any] = field(default_factory=dict)  # e.g. exact_match's ignore_case


@dataclass
class Prompt:
    """One document ready to score: its context(s), and what the answer is."""

    index: int  # position in the evaluated split
    doc: dict[str, Any]
    context: str | list[str]  # a list for multiple-input tasks (one context per choice)
    choices: list[str] | None  # multiple choice: the options, as the harness lists them
    target: Any  # int index, list of indices, or reference text(s)
    continuations: list[str] | None = None  # multiple choice: what is scored after the context
    messages: list[dict[str, str]] | None = None  # with a chat template: the system and user turns


@dataclass
class Task:
    name: str
    path: Path | None  # the YAML file
    config: dict[str, Any]
    base: Path  # where relative data paths start
    docs: list[dict[str, Any]]
    fewshot_pool: list[dict[str, Any]] | None
    content_hash: str  # sha256 of the YAML (with includes) and every data file it reads
    data_files: list[Path]
    columns: set[str]

    @property
    def output_type(self) -> str:
        return self.config.get("output_type", "generate_until")

    @property
    def reference(self) -> str:
        """How the registry names this task's data: `lmstack:task/NAME` for a shipped task, else the YAML."""
        if self.path is not None and self.path.parent == SHIPPED_TASKS:
            return f"lmstack:task/{self.name}"
        return str(self.path) if self.path else self.name

    @property
    def metrics(self) -> list[Metric]:
        entries = self.config.get("metric_list") or [{"metric": m} for m in DEFAULT_METRICS[self.output_type]]
        return [Metric(e["metric"], {k: v for k, v in e.items() if k not in ("metric", "aggregation",
                                                                            "higher_is_better")})
                for e in entries]

    @property
    def filters(self) -> list[Filter]:
        entries = self.config.get("filter_list") or [{"name": "none", "filter": [{"function": "take_first"}]}]
        return [Filter(e["name"], e["filter"]) for e in entries]

    @property
    def generation_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.config.get("generation_kwargs") or {})
        kwargs.setdefault("until", [self.fewshot_delimiter])
        if isinstance(kwargs["until"], str):
            kwargs["until"] = [kwargs["until"]]
        return kwargs

    @property
    def target_delimiter(self) -> str:
        return self.config.get("target_delimiter", " ")

    @property
    def fewshot_delimiter(self) -> str:
        return self.config.get("fewshot_delimiter", "\n\n")

    # --- documents to text, as the harness does it ------------------------------------------------

    def text(self, doc: dict, index: int, spec: Any = None) -> str | int:
        spec = self.config.get("doc_to_text") if spec is None else spec
        value = self._field(spec, doc, index, "doc_to_text")
        if isinstance(value, str) and value.isdigit() and "doc_to_choice" in self.config and spec not in self.columns:
            return int(value)
        return value

    def target(self, doc: dict, index: int) -> Any:
        spec = self.config.get("doc_to_target")
        if isinstance(spec, list):
            return spec
        value = self._field(spec, doc, index, "doc_to_target")
        if not isinstance(value, str) or spec in self.columns:
            return value
        if value.isdigit() and "doc_to_choice" in self.config:
            return int(value)
        if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
            try:
                return ast.literal_eval(value)
            except (SyntaxError, ValueError):
                return value
        return value

    def choices(self, doc: dict, index: int) -> list[str]:
        spec = self.config.get("doc_to_choice")
        if isinstance(spec, dict):
            return list(spec.values())
        if isinstance(spec, list):
            return spec
        value = self._field(spec, doc, index, "doc_to_choice")
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (SyntaxError, ValueError):
                value = None
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            raise self._doc_error(index, "doc_to_choice", f"gave {str(value)[:80]!r}, not a non-empty list of strings")
        return value

    def _field(self, spec: Any, doc: dict, index: int, key: str) -> Any:
        if spec is None:
            raise LmstackError(f"task {self.name}: `{key}` is not set; add it to the task file")
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return spec
        if not isinstance(spec, str):
            raise LmstackError(f"task {self.name}: `{key}` must be a column name or a Jinja template, got {spec!r}")
        if spec in self.columns:
            return doc[spec]
        if re.fullmatch(r"[A-Za-z_]\w*", spec):
            raise LmstackError(f"task {self.name}: `{key}: {spec}` names no column of the data "
                               f"(columns: {', '.join(sorted(self.columns))}); fix the name or write a template")
        try:
            return _template(spec).render(**doc)
        except Exception as error:  # jinja raises many kinds for a bad template or missing field
            raise self._doc_error(index, key, f"failed to render ({_one_line(error)})") from None

    def _doc_error(self, index: int, key: str, what: str) -> LmstackError:
        where = f"document {index}" if index >= 0 else "a few-shot example"
        return LmstackError(f"task {self.name}, {where}: `{key}` {what}; fix the template or the data")

    # --- prompts -----------------------------------------------------------------------------------

    def prompts(self, *, num_fewshot: int | None = None, limit: int | float | None = None, seed: int = FEWSHOT_SEED,
                chat: Callable[[list[dict[str, str]]], str] | None = None) -> list[Prompt]:
        """Every evaluated document as a Prompt; `chat` renders messages with the model's template."""
        shots = (self.config.get("num_fewshot") or 0) if num_fewshot is None else num_fewshot
        docs = self.docs[: _limit(limit, len(self.docs))]
        sampler = _Sampler(self, seed) if shots else None
        prompts = []
        for index, doc in enumerate(docs):
            examples = sampler.sample(shots, doc) if sampler else []
            prompts.append(self._prompt(index, doc, examples, chat))
        return prompts

    def _prompt(self, index: int, doc: dict, examples: list[dict], chat) -> Prompt:
        if self.output_type == "loglikelihood_rolling":  # the whole target is scored; there is no prompt
            target = self.target(doc, index)
            if not isinstance(target, str):
                raise self._doc_error(index, "doc_to_target", "must give the text to score")
            return Prompt(index, doc, "", None, target)
        messages = [("system", self._description(doc, index), "")] if self.config.get("description") else []
        for example in examples:
            messages += [("user", self._as_text(self.text(example, -1), example), self.target_delimiter),
                         ("assistant", self._answer_text(example), self.fewshot_delimiter)]
        text = self.text(doc, index)
        choices = self.choices(doc, index) if "doc_to_choice" in self.config else None
        target = self.target(doc, index)
        if isinstance(text, int):  # multiple inputs: each choice completes the context (Winogrande)
            if choices is None:
                raise self._doc_error(index, "doc_to_text", "gave a number but the task has no doc_to_choice")
            contexts = [_render(messages + [("user", option, "")], chat)[0] for option in choices]
            delimiter = "" if chat else self.target_delimiter
            return Prompt(index, doc, contexts, choices, text, [f"{delimiter}{target}"])
        context, chat_messages = _render(messages + [("user", self._as_text(text, doc), "")], chat)
        continuations = None
        if self.output_type == "multiple_choice":
            if choices is None:
                raise LmstackError(f"task {self.name}: multiple_choice needs `doc_to_choice`; add it to the task file")
            delimiter = "" if chat else self.target_delimiter
            continuations = [f"{delimiter}{choice}" for choice in choices]
        return Prompt(index, doc, context, choices, target, continuations, chat_messages)

    def _description(self, doc: dict, index: int) -> str:
        spec = str(self.config["description"])  # free text: a single word is text, not a column
        if spec in self.columns:
            return str(doc[spec])
        try:
            return _template(spec).render(**doc)
        except Exception as error:  # jinja raises many kinds for a bad template or missing field
            raise self._doc_error(index, "description", f"failed to render ({_one_line(error)})") from None

    def _answer_text(self, example: dict) -> str:
        target = self.target(example, -1)
        if isinstance(target, int) and "doc_to_choice" in self.config:
            return self.choices(example, -1)[target]
        return str(target[0] if isinstance(target, list) else target)

    def _as_text(self, value: Any, doc: dict) -> str:
        if isinstance(value, int):
            return self.choices(doc, -1)[value]
        return str(value)


class _Sampler:
    """Few-shot examples drawn exactly as the harness draws them (same seed, same order of draws)."""

    def __init__(self, task: Task, seed: int):
        if not task.fewshot_pool:
            raise LmstackError(f"task {task.name}: few-shot examples were asked for but the task has no documents to "
                               "draw them from; set fewshot_split or pass --num-fewshot 0")
        self.pool = task.fewshot_pool
        self.rnd = random.Random(seed)
        fewshot = task.config.get("fewshot_config") or {}
        self.first_n = fewshot.get("sampler", "default") == "first_n"
        self.exclude_eval_doc = fewshot.get("split", task.config.get("fewshot_split")) == task.config.get("test_split")
        self.name = task.name

    def sample(self, n: int, doc: dict) -> list[dict]:
        if self.first_n:
            pool = [d for d in self.pool if d != doc] if self.exclude_eval_doc else self.pool
            return self._enough(pool, n)[:n]
        if not self.exclude_eval_doc:
            return self.rnd.sample(self._enough(self.pool, n), n)
        drawn = [d for d in self.rnd.sample(self._enough(self.pool, n + 1), n + 1) if d != doc][:n]
        if len(drawn) < n:  # several copies of the evaluated document were drawn
            drawn = self.rnd.sample(self._enough([d for d in self.pool if d != doc], n), n)
        return drawn

    def _enough(self, pool: list[dict], n: int) -> list[dict]:
        if len(pool) < n:
            raise LmstackError(f"task {self.name}: {n} few-shot examples asked for but only {len(pool)} are available; "
                               "lower --num-fewshot")
        return pool


def _render(messages: list[tuple[str, str, str]], chat) -> tuple[str, list[dict[str, str]] | None]:
    """Plain text (each message followed by its delimiter) or, with `chat`, one system and one user
    turn (few-shot examples folded into the user turn, as the harness does) through the template."""
    if chat is None:
        return "".join(content + delimiter for _, content, delimiter in messages), None
    system = [{"role": "system", "content": messages[0][1]}] if messages and messages[0][0] == "system" else []
    turns = messages[len(system):]
    user = "".join(content + delimiter for _, content, delimiter in turns[:-1]) + turns[-1][1]
    conversation = system + [{"role": "user", "content": user}]
    return chat(conversation), conversation


def _limit(limit: int | float | None, total: int) -> int:
    if limit is None:
        return total
    if limit < 1:
        return max(1, int(total * limit))
    return min(int(limit), total)


# --- finding and loading task files ----------------------------------------------------------------


def shipped_task_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED_TASKS.glob("*.yaml"))


def task_files(spec: str) -> list[Path]:
    """The YAML files `--tasks` names: comma-separated files, folders of YAML files, or shipped task names."""
    files: list[Path] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        path = Path(item).expanduser()
        if item in shipped_task_names() and not path.exists():
            files.append(SHIPPED_TASKS / f"{item}.yaml")
        elif path.is_dir():
            found = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))
            if not found:
                raise LmstackError(f"task folder {path} holds no .yaml files")
            files += found
        elif path.suffix in (".yaml", ".yml") or path.exists():
            files.append(check_file(path, "task file", suffixes=(".yaml", ".yml")))
        else:
            raise LmstackError(f"no task {item!r}: not a YAML file, a folder or a shipped task "
                               f"({', '.join(shipped_task_names())})")
    if not files:
        raise LmstackError("no tasks given; pass --tasks with task names, YAML files or folders")
    return list(dict.fromkeys(files))


def load_tasks(spec: str) -> list[Task]:
    tasks = [load_task(path) for path in task_files(spec)]
    names = [task.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise LmstackError(f"two task files define the task {duplicates[0]!r}; give each task a unique `task:` name")
    return tasks


def load_task(path: str | Path) -> Task:
    """Read a task YAML (and the files it includes), its data, and check every document renders."""
    path = Path(path).resolve()
    config, sources = _read_config(path, seen=())
    name = config.get("task")
    if not isinstance(name, str) or not name:
        raise LmstackError(f"{path}: a task file needs `task: NAME` (a group file listing tasks is not supported; "
                           "pass the task files themselves)")
    _check_config(name, config)
    base = path.parent
    splits = _data_splits(name, config, base)
    eval_split = config.get("test_split") or config.get("validation_split")
    if not eval_split:
        raise LmstackError(f"task {name}: set test_split or validation_split to say which documents to evaluate")
    docs = _split(name, splits, eval_split, config)
    pool = _fewshot_pool(name, config, splits, docs)
    files = sorted({f for split_files in splits.values() for f in split_files})
    digest = hashlib.sha256()
    for source in [*sources, *files]:
        digest.update(source.read_bytes())
    columns = set().union(*(doc.keys() for doc in docs))
    task = Task(name, path, config, base, docs, pool, digest.hexdigest(), files, columns)
    _check_documents(task)
    return task


def _read_config(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], list[Path]]:
    if path in seen:
        raise LmstackError(f"{path}: `include` loops back to itself; remove the cycle")
    check_file(path, "task file")
    try:
        config = yaml.load(read_text(path, "task file"), Loader=_TaskLoader)
    except yaml.YAMLError as error:
        raise LmstackError(f"{path} is not valid YAML ({_one_line(error)})") from None
    if not isinstance(config, dict):
        raise LmstackError(f"{path}: a task file must be a YAML mapping of settings")
    sources = [path]
    if "include" in config:
        parent_path = (path.parent / str(config["include"])).resolve()
        if not parent_path.is_file():
            raise LmstackError(f"{path}: `include: {config['include']}` names no file (looked at {parent_path})")
        parent, parent_sources = _read_config(parent_path, (*seen, path))
        config = {**parent, **config}
        sources = parent_sources + sources
    return config, sources


def _check_config(name: str, config: dict[str, Any]) -> None:
    for key, value in config.items():
        function = _function_in(value)
        if function is not None:
            raise LmstackError(f"task {name}: `{key}` uses `!function {function}`, Python from the task file, which "
                               "lmstack does not run; write it as a Jinja template or a field mapping")
        if key in UNSUPPORTED_KEYS:
            raise LmstackError(f"task {name}: `{key}` ({UNSUPPORTED_KEYS[key]}) is not supported by lmstack")
        if key not in KEYS:
            raise LmstackError(f"task {name}: unknown key `{key}`; check the spelling against lm-eval's task guide")
    output_type = config.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise LmstackError(f"task {name}: unknown output_type {output_type!r}; use one of {', '.join(OUTPUT_TYPES)}")
    if config.get("repeats", 1) != 1:
        raise LmstackError(f"task {name}: repeats > 1 is not supported; set repeats: 1")
    num_fewshot = config.get("num_fewshot")
    if num_fewshot is not None and (not isinstance(num_fewshot, int) or num_fewshot < 0):
        raise LmstackError(f"task {name}: num_fewshot must be an integer >= 0, got {num_fewshot!r}")
    _check_metrics(name, config, output_type)
    unknown = sorted(set(config.get("generation_kwargs") or {}) - set(GENERATION_KEYS))
    if unknown:
        raise LmstackError(f"task {name}: generation_kwargs {', '.join(unknown)} not supported; use "
                           f"{', '.join(GENERATION_KEYS)}")
    _check_filters(name, config.get("filter_list"))
    fewshot = config.get("fewshot_config") or {}
    if not isinstance(fewshot, dict) or fewshot.get("sampler", "default") not in SAMPLERS:
        raise LmstackError(f"task {name}: fewshot_config.sampler must be one of {', '.join(SAMPLERS)}")
    process = config.get("process_docs")
    if process is not None and not (isinstance(process, dict) and all(isinstance(v, str) for v in process.values())):
        raise LmstackError(f"task {name}: process_docs must map field names to Jinja templates or column names")


def _function_in(value: Any) -> str | None:
    if isinstance(value, _Function):
        return str(value)
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((found for child in children if (found := _function_in(child)) is not None), None)


def _check_metrics(name: str, config: dict[str, Any], output_type: str) -> None:
    from lmstack.eval.metrics import METRICS_BY_TYPE  # the one list of what each output type can score

    entries = config.get("metric_list") or []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str):
            raise LmstackError(f"task {name}: each metric_list entry needs `metric: NAME`")
        if entry.get("hf_evaluate"):
            raise LmstackError(f"task {name}: metric {entry['metric']} from HF evaluate is not supported")
        if entry["metric"] not in METRICS_BY_TYPE[output_type]:
            raise LmstackError(f"task {name}: metric {entry['metric']!r} is not available for {output_type}; "
                               f"use {', '.join(METRICS_BY_TYPE[output_type])}")
        if entry["metric"] == "mauve":
            _check_mauve_options(name, {k: v for k, v in entry.items()
                                        if k not in ("metric", "aggregation", "higher_is_better")})


def _check_mauve_options(name: str, options: dict[str, Any]) -> None:
    from lmstack.eval.metrics import MAUVE_OPTIONS

    unknown = sorted(set(options) - set(MAUVE_OPTIONS))
    if unknown:
        raise LmstackError(f"task {name}: mauve has no option {', '.join(unknown)}; use {', '.join(MAUVE_OPTIONS)}")
    features = options.get("features", MAUVE_OPTIONS["features"])
    if not (features == MAUVE_OPTIONS["features"] or isinstance(features, str)
            and re.fullmatch(r"model:.+|openai:[^#]+#.+", features)):
        raise LmstackError(f"task {name}: mauve features must be {MAUVE_OPTIONS['features']}, model:REF or "
                           f"openai:URL#MODEL, got {features!r}")
    buckets = options.get("num_buckets", "auto")
    if buckets != "auto" and not (isinstance(buckets, int) and not isinstance(buckets, bool) and 2 <= buckets <= 10_000):
        raise LmstackError(f"task {name}: mauve num_buckets must be auto or an integer in 2..10000, got {buckets!r}")
    scaling = options.get("scaling_factor", 5.0)
    if not (isinstance(scaling, (int, float)) and not isinstance(scaling, bool) and 0 < scaling <= 1000):
        raise LmstackError(f"task {name}: mauve scaling_factor must be a number in (0, 1000], got {scaling!r}")


def _check_filters(name: str, filters: Any) -> None:
    if filters is None:
        return
    for entry in filters if isinstance(filters, list) else [None]:
        if not isinstance(entry, dict) or not isinstance(entry.get("filter"), list):
            raise LmstackError(f"task {name}: each filter_list entry needs `name` and a `filter` list")
        for step in entry["filter"]:
            function = step.get("function") if isinstance(step, dict) else None
            if function not in FILTERS:
                raise LmstackError(f"task {name}: unknown filter function {function!r}; use {', '.join(FILTERS)}")
            if function == "regex":
                try:
                    re.compile(step.get("regex_pattern", r"#### (\-?[0-9\.\,]+)"))
                except re.error as error:
                    raise LmstackError(f"task {name}: bad regex_pattern ({error})") from None


def _filter_step(step: dict[str, Any], response: str) -> str:
    function = step["function"]
    if function == "regex":
        found = re.findall(step.get("regex_pattern", r"#### (\-?[0-9\.\,]+)"), response)
        if not found:
            return step.get("fallback", "[invalid]")
        match = found[step.get("group_select", 0)]
        if isinstance(match, tuple):
            match = next((m for m in match if m), step.get("fallback", "[invalid]"))
        return match.strip()
    if function == "lowercase":
        return response.lower()
    if function == "uppercase":
        return response.upper()
    if function == "remove_whitespace":
        return response.strip()
    if function == "map":
        return (step.get("mapping_dict") or {}).get(response, step.get("default_value"))
    return response  # take_first: one response per document here


# --- data ------------------------------------------------------------------------------------------


def _data_splits(name: str, config: dict[str, Any], base: Path) -> dict[str, list[Path]]:
    """Split name -> data files, as `datasets.load_dataset(dataset_path, data_files=...)` would find them."""
    source = config.get("dataset_path")
    kwargs = config.get("dataset_kwargs") or {}
    if not isinstance(source, str) or not source:
        raise LmstackError(f"task {name}: set dataset_path (json, csv, parquet, text or a local folder)")
    if source in BUILDERS:
        data_files = kwargs.get("data_files")
        if data_files is None:
            raise LmstackError(f"task {name}: dataset_path {source} needs dataset_kwargs.data_files")
        if not isinstance(data_files, dict):
            data_files = {"train": data_files}
        return {split: _data_file_list(name, files, base) for split, files in data_files.items()}
    folder = _local(base, source)
    if folder is None or not folder.is_dir():
        raise LmstackError(f"task {name}: dataset_path {source!r} is not json/csv/parquet/text nor a local folder; "
                           "lmstack reads data from disk only: download it and point dataset_kwargs.data_files at it")
    check_dir(folder, "dataset folder")
    splits: dict[str, list[Path]] = {}
    suffixes = {s for group in BUILDERS.values() for s in group}
    for file in sorted(p for p in folder.rglob("*") if p.suffix in suffixes):
        split = re.split(r"[-_.]", file.name, maxsplit=1)[0]
        splits.setdefault(split, []).append(file)
    return splits


def _data_file_list(name: str, files: Any, base: Path) -> list[Path]:
    found: list[Path] = []
    for item in files if isinstance(files, list) else [files]:
        if any(ch in str(item) for ch in "*?["):
            for root in (base, Path.cwd()):
                matched = sorted(Path(p) for p in glob.glob(str(root / str(item))))
                if matched:
                    break
            if not matched:
                raise LmstackError(f"task {name}: data_files pattern {item!r} matches no file")
            found += matched
            continue
        path = _local(base, str(item))
        if path is None:
            raise LmstackError(f"task {name}: data file not found: {item} (looked in {base} and {Path.cwd()})")
        found.append(check_file(path, "data file"))
    return found


def _local(base: Path, item: str) -> Path | None:
    path = Path(item).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    for candidate in (base / path, Path.cwd() / path):
        if candidate.exists():
            return candidate.resolve()
    return None


def _split(name: str, splits: dict[str, list[Path]], split: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    if split not in splits:
        raise LmstackError(f"task {name}: no {split!r} split in the data (found: {', '.join(splits) or 'none'}); "
                           "check test_split/validation_split and dataset_kwargs.data_files")
    kwargs = config.get("dataset_kwargs") or {}
    docs = [doc for path in splits[split] for doc in _read_data_file(name, path, kwargs)]
    if not docs:
        raise LmstackError(f"task {name}: the {split!r} split has no documents")
    return _process_docs(name, docs, config.get("process_docs"))


def _read_data_file(name: str, path: Path, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    if path.suffix == ".txt":
        return _read_text_file(path, kwargs.get("sample_by", "line"))
    if path.suffix == ".json" and kwargs.get("field"):
        import json

        data = json.loads(read_text(path, "data file")).get(kwargs["field"])
        if not isinstance(data, list):
            raise LmstackError(f"task {name}: {path} has no list under field {kwargs['field']!r}")
        return data
    records = read_records(path)
    return _typed_csv(records) if path.suffix == ".csv" else records


def _read_text_file(path: Path, sample_by: str) -> list[dict[str, str]]:
    """The `text` builder: a record per line (default), per paragraph, or the whole file."""
    text = read_text(path, "data file")
    if sample_by == "document":
        return [{"text": text}]
    if sample_by == "paragraph":
        return [{"text": part} for part in re.split(r"\n\s*\n", text) if part.strip()]
    return [{"text": line} for line in text.splitlines()]


def _typed_csv(records: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Columns whose every value is an integer (or a number) become numbers, as `datasets` infers them."""
    for column in records[0] if records else []:
        values = [r[column] for r in records]
        for kind in (int, float):
            try:
                converted = [kind(v) for v in values]
            except (TypeError, ValueError):
                continue
            for record, value in zip(records, converted):
                record[column] = value
            break
    return records


def _process_docs(name: str, docs: list[dict[str, Any]], mapping: dict[str, str] | None) -> list[dict[str, Any]]:
    if not mapping:
        return docs
    processed = []
    for index, doc in enumerate(docs):
        new = dict(doc)
        for key, spec in mapping.items():
            try:
                new[key] = doc[spec] if spec in doc else _template(spec).render(**doc)
            except Exception as error:  # a bad template or a missing field
                raise LmstackError(f"task {name}: process_docs.{key} failed on document {index} "
                                   f"({_one_line(error)}); fix the mapping or the data") from None
        processed.append(new)
    return processed


def _fewshot_pool(name: str, config: dict[str, Any], splits: dict[str, list[Path]],
                  docs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    fewshot = config.get("fewshot_config") or {}
    split = fewshot.get("split", config.get("fewshot_split"))
    if split is None and isinstance(fewshot.get("samples"), list):
        return fewshot["samples"]
    for candidate in (split, config.get("training_split"), config.get("validation_split")):
        if candidate is not None and (candidate == split or candidate in splits):
            return _split(name, splits, candidate, config)
    return docs


def _check_documents(task: Task) -> None:
    """Render every document once now, so a bad template or missing field fails before the model loads."""
    for index, doc in enumerate(task.docs):
        task._prompt(index, doc, [], None)


@lru_cache(maxsize=256)
def _template(source: str):
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    environment.filters["regex_replace"] = lambda text, pattern, replacement: re.sub(pattern, replacement, text)
    return environment.from_string(source)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]
