"""The generation engine: every generation in lmstack runs here.

Submit requests, each with its own sampling settings, stop conditions, structured-output
constraint, adapter and seed; iterate their tokens as they come; cancel them; read the metrics.

    engine = Engine(model, tokenizer=tokenizer, config=EngineConfig(kv_cache_mb=512))
    handle = engine.submit(Request(prompt_ids, sampling=SamplingConfig(temperature=0.7), seed=1))
    for output in handle:             # RequestOutput: new token ids and text, finished, finish_reason
        print(output.text, end="")
    engine.metrics()                  # queue length, running sequences, KV blocks, tokens/s, TTFT

Iterating a handle runs the engine in the calling thread; `engine.start()` runs it in a
background thread instead (for a server), and handles then wait for their tokens.

One step: the scheduler picks the sequences (continuous batching over a paged KV cache with
prefix caching and chunked prefill, `scheduler.py`), the runner computes their logits in one
forward pass (`runner.py`), and the engine picks each sequence's next tokens: the logits
processors of its sampling settings, its grammar's mask, then argmax or a draw from its own
generator; speculative rows keep the drafts the model agrees with (`speculative.py`).

Sampled tokens stay on the device: the next step reads them from there, and the host reads them
back only every `sync_interval` steps, or at once when a request streams, is constrained, is
speculating, gets its first token or reaches its length limit. A sequence that ended on a stop
token meanwhile is found at that point, and what it computed after its end is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field
from typing import Any, Callable, Iterator

import torch

from lmstack.errors import LmstackError
from lmstack.generate.detokenize import TextStream
from lmstack.generate.kv_cache import BlockPool, KVStore
from lmstack.generate.multi_lora import AdapterLoader, MultiLora
from lmstack.generate.processors import SamplingConfig, apply_processors
from lmstack.generate.runner import Feed, ModelRunner
from lmstack.generate.scheduler import Scheduler, Sequence
from lmstack.generate.speculative import DraftModel, SpeculativeConfig, lookup_ngram, verify

log = logging.getLogger(__name__)

BLOCK_SIZES = (8, 16, 32, 64)


@dataclass
class EngineConfig:
    """How much the engine may hold and do at once."""

    kv_cache_mb: float = 1024.0  # memory for keys and values (the draft model's cache comes on top)
    block_size: int = 16  # tokens per KV block
    max_batch_tokens: int = 512  # new tokens per step; prompts are read in chunks of this size
    max_running: int = 64  # sequences decoding at once
    sync_interval: int = 16  # steps between reads of sampled tokens when nothing asks sooner
    prefix_caching: bool = True  # reuse the KV blocks of earlier prompts (off: benchmarks of prefill)
    max_adapters: int = 8  # LoRA adapters held in memory (least recently used ones are dropped)
    speculative: SpeculativeConfig | None = None
    # A sequence gets bit-identical numbers alone and in any batch: a lone token runs with a
    # twin (see runner.py). Off by default, as in vLLM: it slowed batch-1 bf16 decoding of
    # SmolLM2 by ~17% here, and without it greedy tokens differ only where two logits are
    # within a rounding error (the real SmolLM2 in bf16: 1 of 3 prompts alone vs in a batch).
    batch_invariant: bool = False
    # Fused q/k/v and gate/up copies of the weights (oneDNN-packed on a CPU in bf16): faster
    # decoding for more memory (about one more copy of the layers' weights). None: where it
    # pays, i.e. bf16 on a CPU with native bf16, and CUDA.
    fuse_weights: bool | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.kv_cache_mb > 0 and self.kv_cache_mb == self.kv_cache_mb, f"kv_cache_mb must be > 0, got {self.kv_cache_mb}"),
            (self.block_size in BLOCK_SIZES, f"block_size must be one of {BLOCK_SIZES}, got {self.block_size}"),
            (1 <= self.max_batch_tokens <= 65536, f"max_batch_tokens must be in [1, 65536], got {self.max_batch_tokens}"),
            (1 <= self.max_running <= 4096, f"max_running must be in [1, 4096], got {self.max_running}"),
            (1 <= self.sync_interval <= 1024, f"sync_interval must be in [1, 1024], got {self.sync_interval}"),
            (1 <= self.max_adapters <= 1024, f"max_adapters must be in [1, 1024], got {self.max_adapters}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LmstackError(message)


@dataclass
class Request:
    """One generation. `constraint` comes from `lmstack.generate.structured`; `adapter` names a
    PEFT adapter the engine's adapter loader knows; `stream` asks for every token at once."""

    prompt_ids: list[int]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] | list[int] = ()
    stop: tuple[str, ...] | list[str] = ()  # stop strings (needs the engine's tokenizer)
    constraint: Any = None
    adapter: str | None = None
    seed: int | None = None
    speculate: bool = True  # use the engine's speculative decoding, if it has one
    stream: bool = False
    observer: Callable[[torch.Tensor, int], None] | None = None  # (processed scores [V], chosen) per step
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])


@dataclass
class RequestOutput:
    """What a request gained since its last output."""

    request_id: str
    token_ids: list[int]
    text: str  # "" when the engine has no tokenizer
    finished: bool
    finish_reason: str | None  # "stop", "length", "cancelled" or "error" once finished


@dataclass
class EngineMetrics:
    waiting: int  # requests queued, not yet admitted (or preempted)
    running: int  # sequences in the running batch
    kv_blocks_used: int
    kv_blocks_total: int
    kv_blocks_cached: int  # blocks holding a reusable prefix (in use or free)
    prefix_cache_hit_rate: float  # prompt blocks found in the cache / prompt blocks looked up
    tokens_per_second: float  # new tokens per second over the last few seconds
    time_to_first_token: float | None  # mean over the last 100 requests, seconds
    speculative_acceptance_rate: float | None  # accepted / proposed draft tokens
    preemptions: int
    steps: int
    adapters_loaded: list[str]


class RequestHandle:
    """A submitted request: iterate it for outputs; `result()` waits for the end."""

    def __init__(self, engine: "Engine", request: Request, limit: int):
        self.engine, self.request, self.limit = engine, request, limit
        self.token_ids: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None
        self.error: str | None = None  # why the request failed (finish_reason "error"): a grammar dead end
        self.prompt_tokens = len(request.prompt_ids)
        self.cached_tokens = 0  # prompt tokens served by the prefix cache
        self.drafted = self.accepted = 0  # speculative tokens proposed and kept
        self.stream: TextStream | None = None  # the reply's text, when the engine has a tokenizer
        self.submitted_at = time.perf_counter()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._outputs: queue.SimpleQueue[RequestOutput] = queue.SimpleQueue()
        self._published = (0, 0)  # tokens and characters already put in an output

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.submitted_at

    def __iter__(self) -> Iterator[RequestOutput]:
        while True:
            output = self.engine._next_output(self)
            if output is None:  # finished, and its outputs were taken already
                return
            yield output
            if output.finished:
                return

    def result(self) -> "RequestHandle":
        """Wait until the request finishes (running the engine here unless it runs in a thread)."""
        for _ in self:
            pass
        return self

    def cancel(self) -> None:
        self.engine.cancel(self.id)

    def poll(self) -> list[RequestOutput]:
        """The outputs that have arrived, without waiting or running the engine."""
        outputs = []
        while not self._outputs.empty():
            outputs.append(self._outputs.get_nowait())
        return outputs

    def _publish(self, text: str, final: bool) -> None:
        tokens, chars = self._published
        if len(self.token_ids) == tokens and len(text) == chars and not final:
            return
        self.text = text
        self._published = (len(self.token_ids), len(text))
        self._outputs.put(RequestOutput(self.id, self.token_ids[tokens:], text[chars:], final, self.finish_reason))


class Engine:
    """Continuous batching over a paged KV cache; see the module docstring."""

    def __init__(self, model: torch.nn.Module, *, tokenizer: Any = None, config: EngineConfig | None = None,
                 adapter_loader: AdapterLoader | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.config = config = config or EngineConfig()
        self.device, self.dtype = model.device, model.dtype  # the activations' (a quantized model's too)
        block_bytes = KVStore.bytes_per_block(model.config, config.block_size, self.dtype)
        num_blocks = max(int(config.kv_cache_mb * 2**20) // block_bytes, 2) + 1
        self.store = KVStore(model.config, num_blocks, config.block_size, self.device, self.dtype)
        self.pool = BlockPool(num_blocks, on_first_use=self.store.zero)
        self.scheduler = Scheduler(self.pool, config.block_size, config.max_batch_tokens, config.max_running,
                                   prefix_caching=config.prefix_caching)
        self.runner = ModelRunner(model, self.store, config.batch_invariant)
        self._fuse(config.fuse_weights)
        self.lora = MultiLora(model, adapter_loader, config.max_adapters) if adapter_loader else None
        spec = config.speculative
        self.drafter = DraftModel(spec.draft_model, num_blocks, config.block_size) \
            if spec is not None and spec.method == "draft" else None
        self.capacity = (num_blocks - 1) * config.block_size  # tokens one sequence can hold at most
        # Per running sequence (by slot): its last sampled token, and the tokens it has seen
        # (allocated on first use, for the repetition penalty).
        self.last_token = torch.zeros(config.max_running, dtype=torch.long, device=self.device)
        self.seen: torch.Tensor | None = None
        self.free_slots = list(range(config.max_running - 1, -1, -1))
        self.generator = torch.Generator(self.device)
        self.generator.seed()
        self.sequences: dict[str, Sequence] = {}
        self.unsynced: list[tuple[list[Sequence], torch.Tensor]] = []
        self._failed = False  # a request's grammar failed this step
        self.inbox: deque[tuple[str, Any]] = deque()
        self._inbox_lock = threading.Lock()
        self._step_lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._arrivals = 0
        self._stats = {"steps": 0, "preemptions": 0, "drafted": 0, "accepted": 0}
        self._recent_tokens: deque[tuple[float, int]] = deque()
        self._recent_ttft: deque[float] = deque(maxlen=100)

    # --- the public API ----------------------------------------------------------------------

    def submit(self, request: Request) -> RequestHandle:
        """Queue a request; it joins the running batch at the next step there is room."""
        if not request.prompt_ids:
            raise LmstackError("a prompt has no tokens; give each prompt some text (or a BOS token)")
        if request.max_new_tokens < 1:
            raise LmstackError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}")
        if request.stop and self.tokenizer is None:
            raise LmstackError("stop strings need the engine's tokenizer; pass tokenizer= to Engine")
        if request.sampling.num_beams > 1:
            raise LmstackError("the engine samples one sequence per request; run beam search with generate_ids")
        if request.adapter is not None:
            if self.lora is None:
                raise LmstackError("this engine serves no adapters; give it an adapter_loader")
            with self._step_lock:  # a bad adapter fails here, before the request is queued
                self.lora.check(request.adapter)
        limit = self.limit(len(request.prompt_ids), request.max_new_tokens)
        handle = RequestHandle(self, request, limit)
        if request.constraint is not None:
            request.constraint.start()
        with self._inbox_lock:
            self.inbox.append(("submit", handle))
        self._wake.set()
        return handle

    def cancel(self, request_id: str) -> None:
        """End a request now; its output so far is final, with finish_reason "cancelled"."""
        with self._inbox_lock:
            self.inbox.append(("cancel", request_id))
        self._wake.set()

    def generate(self, requests: list[Request]) -> list[RequestHandle]:
        """Submit every request and run until all are finished."""
        handles = [self.submit(r) for r in requests]
        for handle in handles:
            handle.result()
        return handles

    def wait_or_step(self) -> None:
        """Make progress: one step here, or a short wait when the engine runs in its thread."""
        if self._thread is None:
            self.step()
        else:
            time.sleep(0.001)

    def close(self) -> None:
        """Stop the thread and take the adapter hooks off the model."""
        self.stop()
        if self.lora is not None:
            self.lora.close()

    @contextmanager
    def exclusive(self) -> Iterator["DirectCache"]:
        """The KV cache for direct use (beam search); no step runs meanwhile."""
        with self._step_lock:
            self._sync()
            yield DirectCache(self)

    def has_work(self) -> bool:
        return bool(self.sequences or self.inbox)

    def run(self) -> None:
        """Step until every submitted request has finished."""
        while self.has_work():
            self.step()

    def start(self) -> None:
        """Run the engine in a background thread (for a server); handles then wait for outputs."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="lmstack-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (requests in flight stay queued)."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None

    def metrics(self) -> EngineMetrics:
        now = time.perf_counter()
        while self._recent_tokens and now - self._recent_tokens[0][0] > 10:
            self._recent_tokens.popleft()
        window = now - self._recent_tokens[0][0] if self._recent_tokens else 0.0
        drafted = self._stats["drafted"]
        s = self.scheduler
        return EngineMetrics(
            waiting=len(s.waiting) + sum(1 for kind, _ in list(self.inbox) if kind == "submit"),
            running=len(s.running),
            kv_blocks_used=self.pool.num_blocks - 1 - self.pool.num_free,
            kv_blocks_total=self.pool.num_blocks - 1,
            kv_blocks_cached=self.pool.cached_blocks(),
            prefix_cache_hit_rate=s.prefix_hits / s.prefix_queries if s.prefix_queries else 0.0,
            tokens_per_second=sum(n for _, n in self._recent_tokens) / window if window > 0 else 0.0,
            time_to_first_token=sum(self._recent_ttft) / len(self._recent_ttft) if self._recent_ttft else None,
            speculative_acceptance_rate=self._stats["accepted"] / drafted if drafted else None,
            preemptions=self._stats["preemptions"],
            steps=self._stats["steps"],
            adapters_loaded=self.lora.loaded() if self.lora else [],
        )

    def _fuse(self, wanted: bool | None) -> None:
        pack = self.device.type == "cpu" and self.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
        if wanted is None:
            wanted = pack or self.device.type == "cuda"
        if wanted:
            self.model.prepare_for_inference(pack=pack)

    # --- one step ----------------------------------------------------------------------------

    def step(self) -> None:
        with self._step_lock:
            self._take_inbox()
            self._propose_drafts()
            plan = self.scheduler.schedule()
            if plan.preempted:
                self._stats["preemptions"] += len(plan.preempted)
                self._sync()  # recomputing them needs their tokens
                for seq in plan.preempted:
                    self._vacate(seq)
            if plan.empty:
                self._sync()
                return
            self._stats["steps"] += 1
            for seq in plan.decode + [seq for seq, _, _ in plan.prefill]:
                self._occupy(seq)
            feeds = [Feed(s.blocks, s.computed, [0, *s.drafts], s.slot, "all", s.request.adapter) for s in plan.decode]
            feeds += [Feed(s.blocks, start, s.tokens[start:end], None, "last" if end == s.num_tokens else "none",
                           s.request.adapter, prefill=True) for s, start, end in plan.prefill]
            logits = self.runner.forward(feeds, self.last_token, self.lora)
            for seq, _, end in plan.prefill:
                seq.computed = end
                self.scheduler.register_full_blocks(seq)
            rows = {id(f_seq): logits.rows[i] for i, f_seq in enumerate(plan.decode + [s for s, _, _ in plan.prefill])}
            speculating = [s for s in plan.decode if s.drafts]
            plain = [s for s in plan.decode if not s.drafts]
            plain += [s for s, _, end in plan.prefill if end == s.num_tokens]
            if plain:
                self._sample_plain(plain, logits.values[torch.tensor([rows[id(s)].start for s in plain])])
            if speculating:
                for seq in speculating:
                    self._verify(seq, logits.values[rows[id(seq)]])
            if self.unsynced and (self._must_sync(plain) or self._failed):
                self._sync()
            self._failed = False

    def _sample_plain(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        """Pick one token per sequence; they stay on the device until the next sync."""
        chosen = self._choose(seqs, logits)
        slots = torch.tensor([s.slot for s in seqs], device=self.device)
        self.last_token[slots] = chosen
        if self.seen is not None:
            self.seen[slots, chosen] = True
        for seq in seqs:
            seq.prefilled = True
            seq.computed = seq.num_tokens
            seq.num_tokens += 1
            seq.generated += 1
        self.unsynced.append((seqs, chosen))
        self._count_tokens(len(seqs))

    def _choose(self, seqs: list[Sequence], logits: torch.Tensor) -> torch.Tensor:
        """Each row's token: processors, grammar mask, then argmax or a draw, by sampling setting."""
        chosen = torch.empty(len(seqs), dtype=torch.long, device=self.device)
        groups: dict[tuple, list[int]] = {}
        for i, seq in enumerate(seqs):
            groups.setdefault(astuple(seq.request.sampling), []).append(i)
        for members in groups.values():
            sampling = seqs[members[0]].request.sampling
            index = torch.tensor(members, device=self.device)
            seen = None
            if sampling.repetition_penalty != 1.0:
                seen = self.seen[torch.tensor([seqs[i].slot for i in members], device=self.device)]
            scores = apply_processors(sampling.processors(), seen, logits[index])
            for row, i in enumerate(members):
                if seqs[i].request.constraint is not None:
                    try:
                        scores[row] = seqs[i].request.constraint.mask_logits(scores[row])
                    except LmstackError as error:  # this request fails (at the next read-back); the others go on
                        seqs[i].handle.error = str(error)
                        self._failed = True
            picks = self._pick(scores, sampling.greedy, [seqs[i] for i in members])
            chosen[index] = picks
            for row, i in enumerate(members):
                if seqs[i].request.observer is not None:
                    seqs[i].request.observer(scores[row], int(picks[row]))
        return chosen

    def _pick(self, scores: torch.Tensor, greedy: bool, seqs: list[Sequence]) -> torch.Tensor:
        if greedy:
            return scores.argmax(-1)
        probs = scores.softmax(-1)
        picks = torch.empty(len(seqs), dtype=torch.long, device=self.device)
        shared = [i for i, s in enumerate(seqs) if s.request.seed is None]
        if shared:
            picks[shared] = torch.multinomial(probs[shared], 1, generator=self.generator).squeeze(-1)
        for i, seq in enumerate(seqs):
            if seq.request.seed is not None:
                picks[i] = torch.multinomial(probs[i], 1, generator=self._generator(seq)).squeeze(-1)
        return picks

    def _generator(self, seq: Sequence) -> torch.Generator:
        if seq.request.seed is None:
            return self.generator
        if seq.generator is None:
            seq.generator = torch.Generator(self.device).manual_seed(seq.request.seed)
        return seq.generator

    def _must_sync(self, seqs: list[Sequence]) -> bool:
        if len(self.unsynced) >= self.config.sync_interval or not self.scheduler.running:
            return True
        return any(
            s.request.stream or s.request.constraint is not None or s.request.observer is not None
            or s.generated == 1 or s.generated >= self._handle(s).limit
            for s in seqs
        )

    # --- speculative decoding ----------------------------------------------------------------

    def _propose_drafts(self) -> None:
        spec = self.config.speculative
        for seq in self.scheduler.running:
            seq.drafts = []
        if spec is None:
            return
        decoding = [s for s in self.scheduler.running if s.prefilled]
        eligible = [s for s in decoding if self._can_speculate(s)]
        if not eligible or len(decoding) > spec.max_batch:
            return
        self._sync()
        eligible = [s for s in eligible if not self._handle(s).finished]
        for seq in eligible:
            room = min(spec.num_tokens, self._handle(seq).limit - seq.generated - 1, self.capacity - seq.num_tokens)
            if room <= 0:
                continue
            if self.drafter is None:
                seq.drafts = lookup_ngram(seq.tokens, room, spec.ngram_max, spec.ngram_min)
        if self.drafter is not None:
            drafts, probs = self.drafter.propose(eligible, spec.num_tokens, self._draft_pick)
            for seq in eligible:
                room = min(spec.num_tokens, self._handle(seq).limit - seq.generated - 1,
                           self.capacity - seq.num_tokens)
                seq.drafts = drafts[id(seq)][:max(room, 0)]
                seq.draft_probs = probs.get(id(seq))

    def _can_speculate(self, seq: Sequence) -> bool:
        r = seq.request
        return r.speculate and r.constraint is None and r.observer is None and r.sampling.repetition_penalty == 1.0

    def _draft_pick(self, seq: Sequence, logits: torch.Tensor) -> tuple[int, torch.Tensor | None]:
        """The draft model's token for `seq` ([1, V] logits), sampled the way `seq` samples."""
        sampling = seq.request.sampling
        scores = apply_processors(sampling.processors(), None, logits)
        if sampling.greedy:
            return int(scores.argmax(-1)), None
        probs = scores.softmax(-1)[0]
        return int(torch.multinomial(probs, 1, generator=self._generator(seq))), probs

    def _verify(self, seq: Sequence, logits: torch.Tensor) -> None:
        sampling = seq.request.sampling
        scores = apply_processors(sampling.processors(), None, logits)
        drafts = seq.drafts
        # The last token was read from the device buffer; the host knows it too after a sync.
        new = verify(scores, drafts, seq.draft_probs, sampling.greedy, self._generator(seq))
        handle = self._handle(seq)
        handle.drafted += len(drafts)
        handle.accepted += len(new) - 1
        self._stats["drafted"] += len(drafts)
        self._stats["accepted"] += len(new) - 1
        seq.prefilled = True
        seq.computed = seq.num_tokens + len(new) - 1  # the last token and the accepted drafts
        seq.num_tokens += len(new)
        seq.generated += len(new)
        seq.drafts = []
        if self.drafter is not None:
            self.drafter.rollback(seq, seq.computed)
        self.last_token[seq.slot] = new[-1]
        if self.seen is not None:
            self.seen[seq.slot, new] = True
        self._count_tokens(len(new))
        self._accept(seq, new)

    # --- reading tokens back, finishing ------------------------------------------------------

    def _sync(self) -> None:
        """Read the sampled tokens back and hand them to their requests."""
        tokens: dict[int, tuple[Sequence, list[int]]] = {}
        for seqs, chosen in self.unsynced:
            for seq, token in zip(seqs, chosen.tolist()):
                tokens.setdefault(id(seq), (seq, []))[1].append(token)
        self.unsynced.clear()
        for seq, new in tokens.values():
            self._accept(seq, new)

    def _accept(self, seq: Sequence, tokens: list[int]) -> None:
        handle = self._handle(seq)
        if handle.finished:
            return  # it ended at an earlier token; what it computed since is dropped
        request, reason = handle.request, None
        if handle.error is not None:
            self._finish(seq, "error")
            return
        if handle.first_token_at is None:
            handle.first_token_at = time.perf_counter()
            self._recent_ttft.append(handle.time_to_first_token)
        for token in tokens:
            if request.constraint is not None:
                try:
                    request.constraint.advance(token)
                except LmstackError as error:
                    handle.error, reason = str(error), "error"
                    break
            seq.tokens.append(token)
            handle.token_ids.append(token)
            if token in request.stop_token_ids:
                reason = "stop"
            elif handle.stream is not None and handle.stream.push(token):
                reason = "stop"
            elif len(handle.token_ids) >= handle.limit:
                reason = "length"
            elif request.constraint is not None and request.constraint.finished():
                reason = "stop"
            if reason:
                break
        if reason:
            self._finish(seq, reason)
        else:
            self.scheduler.register_full_blocks(seq)
            handle._publish(self._text(handle), False)

    def _finish(self, seq: Sequence, reason: str) -> None:
        handle = self._handle(seq)
        handle.finish_reason = reason
        handle.finished_at = time.perf_counter()
        handle.cached_tokens = seq.cached_tokens
        if handle.stream is not None:
            handle.stream.finish()
        self.scheduler.register_full_blocks(seq)
        self.scheduler.finish(seq)
        self._vacate(seq)
        del self.sequences[handle.id]
        handle._publish(self._text(handle), True)

    def _text(self, handle: RequestHandle) -> str:
        return handle.stream.text[: handle.stream.released] if handle.stream is not None else ""

    # --- bookkeeping -------------------------------------------------------------------------

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            items, self.inbox = list(self.inbox), deque()
        for kind, item in items:
            if kind == "submit":
                self._add(item)
            elif item in self.sequences:
                self._sync()
                if item in self.sequences:
                    self._finish(self.sequences[item], "cancelled")

    def _add(self, handle: RequestHandle) -> None:
        r = handle.request
        handle.stream = TextStream(self.tokenizer, set(r.stop_token_ids), list(r.stop)) if self.tokenizer else None
        seq = Sequence(r, list(r.prompt_ids), len(r.prompt_ids), self._arrivals, handle=handle)
        self._arrivals += 1
        self.sequences[r.id] = seq
        self.scheduler.add(seq)

    def _handle(self, seq: Sequence) -> RequestHandle:
        return seq.handle

    def _occupy(self, seq: Sequence) -> None:
        """Give a sequence joining the batch a slot of per-sequence device state."""
        if seq.slot >= 0:
            return
        seq.slot = self.free_slots.pop()
        if self.lora is not None and seq.request.adapter is not None:
            self.lora.acquire(seq.request.adapter)
        if seq.request.sampling.repetition_penalty != 1.0:
            if self.seen is None:
                vocab = self.model.config.vocab_size
                self.seen = torch.zeros(self.config.max_running, vocab, dtype=torch.bool, device=self.device)
            self.seen[seq.slot] = False
            self.seen[seq.slot, torch.tensor(seq.tokens, device=self.device)] = True

    def _vacate(self, seq: Sequence) -> None:
        if seq.slot >= 0:
            self.free_slots.append(seq.slot)
            seq.slot = -1
            if self.lora is not None and seq.request.adapter is not None:
                self.lora.release(seq.request.adapter)
        if self.drafter is not None:
            self.drafter.release(seq)

    def limit(self, prompt_length: int, max_new_tokens: int) -> int:
        """max_new_tokens, lowered to fit the context window and the KV cache (with a warning)."""
        context = self.model.config.max_position_embeddings
        for room, what in ((context, "the model's context window"), (self.capacity, "the KV cache budget")):
            if prompt_length >= room:
                raise LmstackError(f"the prompt is {prompt_length} tokens but {what} is {room}; shorten the prompt"
                                   + (" or raise kv_cache_mb" if room == self.capacity else ""))
            if prompt_length + max_new_tokens > room:
                log.warning("note: max_new_tokens lowered from %d to %d to fit %s (%d tokens)",
                            max_new_tokens, room - prompt_length, what, room)
                max_new_tokens = room - prompt_length
        return max_new_tokens

    def _count_tokens(self, n: int) -> None:
        self._recent_tokens.append((time.perf_counter(), n))

    def _next_output(self, handle: RequestHandle) -> RequestOutput | None:
        while True:
            try:
                return handle._outputs.get_nowait() if self._thread is None else handle._outputs.get(timeout=0.1)
            except queue.Empty:
                if handle.finished:
                    return None
                if self._thread is None:
                    self.step()

    def _loop(self) -> None:
        while not self._stopping:
            if not self.has_work():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            self.step()


class DirectCache:
    """Blocks of the engine's KV cache used outside the scheduler: beam search forks sequences.

    A fork shares its parent's blocks; a block is copied only when a sequence writes into one it
    shares (copy on write).
    """

    def __init__(self, engine: Engine):
        self.engine, self.pool, self.store = engine, engine.pool, engine.store
        self.block_size = engine.config.block_size
        self.last_logits: torch.Tensor | None = None

    def prefill(self, tokens: list[int]) -> list[int]:
        """Compute a prompt into fresh blocks (in chunks); its last logits go to `last_logits`."""
        blocks = [self._allocate() for _ in range(-(-len(tokens) // self.block_size))]
        chunk = self.engine.config.max_batch_tokens
        for start in range(0, len(tokens), chunk):
            end = min(start + chunk, len(tokens))
            feed = Feed(blocks, start, tokens[start:end], None, "last" if end == len(tokens) else "none", prefill=True)
            self.last_logits = self.engine.runner.forward([feed]).values
        return blocks

    def fork(self, blocks: list[int]) -> list[int]:
        return self.pool.share(blocks)

    def release(self, blocks: list[int]) -> None:
        self.pool.release(blocks)

    def decode(self, tables: list[list[int]], tokens: list[int], position: int) -> torch.Tensor:
        """Feed token i at `position` of sequence `tables[i]`; logits [len(tables), V]."""
        for table in tables:
            self._writable(table, position)
        feeds = [Feed(table, position, [token], None, "all") for table, token in zip(tables, tokens)]
        return self.engine.runner.forward(feeds).values

    def _writable(self, table: list[int], position: int) -> None:
        index = position // self.block_size
        if index == len(table):
            table.append(self._allocate())
        elif self.pool.refs[table[index]] > 1:  # shared with another beam: copy before writing
            copy = self._allocate()
            self.store.copy(table[index], copy)
            self.pool.release([table[index]])
            table[index] = copy

    def _allocate(self) -> int:
        block = self.pool.allocate()
        if block is None:
            raise LmstackError("the KV cache is full; raise kv_cache_mb or use fewer beams")
        return block
