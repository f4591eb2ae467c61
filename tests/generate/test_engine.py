"""The engine on the tiny random Llama: continuous batching, paged KV, prefix caching, chunked
prefill, preemption, cancellation, streaming, seeds, the background thread and metrics."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.generate.engine import Engine, EngineConfig, Request
from lmstack.generate.generate import generate_ids
from lmstack.generate.processors import SamplingConfig

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ours(model_pair):
    return model_pair[0]


@pytest.fixture(scope="module")
def sixteen() -> list[list[int]]:
    g = torch.Generator().manual_seed(3)
    return [torch.randint(3, 128, (int(n),), generator=g).tolist() for n in torch.randint(2, 70, (16,), generator=g)]


def run(model, prompts, config=None, **request):
    engine = Engine(model, config=config or EngineConfig(kv_cache_mb=4))
    handles = engine.generate([Request(p, **({"max_new_tokens": 24} | request)) for p in prompts])
    return [h.token_ids for h in handles], engine


def test_engine_greedy_equals_transformers_batched_or_alone(model_pair, sixteen):
    ours, hf = model_pair
    together, _ = run(ours, sixteen[:4])
    for prompt, tokens in zip(sixteen[:4], together):
        expected = hf.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, pad_token_id=0,
                               eos_token_id=None)[0, len(prompt):].tolist()
        assert tokens == expected


def test_a_prompt_alone_and_in_a_batch_of_16_gives_the_same_tokens(ours, sixteen):
    """Batch invariance, bit for bit: bf16 logits of every step alone and amid 15 other sequences."""
    model = copy.deepcopy(ours).to(torch.bfloat16)

    def scores(prompts):
        seen: list[list[torch.Tensor]] = [[] for _ in prompts]
        engine = Engine(model, config=EngineConfig(kv_cache_mb=4))
        handles = engine.generate([Request(p, max_new_tokens=20, observer=lambda s, c, i=i: seen[i].append(s))
                                   for i, p in enumerate(prompts)])
        return [h.token_ids for h in handles], seen

    batch_tokens, batch_scores = scores(sixteen)
    for i in (0, 7, 15):
        alone_tokens, alone_scores = scores([sixteen[i]])
        assert alone_tokens[0] == batch_tokens[i]
        assert all(torch.equal(a, b) for a, b in zip(alone_scores[0], batch_scores[i]))


def test_a_lone_sequence_rounds_as_in_a_batch_at_smollm2_width():
    """At SmolLM2's widths (576, 1536) a bf16 matmul of one row takes another kernel than of
    several, which flips a last bit every few steps: with EngineConfig.batch_invariant a sequence
    decoding alone runs as two rows, and gets the numbers it gets in a batch."""
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    torch.manual_seed(0)
    config = ModelConfig(family="llama", vocab_size=256, hidden_size=576, intermediate_size=1536, num_layers=2,
                         num_heads=9, num_kv_heads=3, head_dim=64)
    model = Transformer(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if name.endswith("norm.weight") else torch.randn_like(p) * 0.08)
    model = model.eval().to(torch.bfloat16)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 256, (3 + i,), generator=g).tolist() for i in range(16)]

    def scores(chosen):
        seen: list[list[torch.Tensor]] = [[] for _ in chosen]
        engine = Engine(model, config=EngineConfig(kv_cache_mb=16, batch_invariant=True))
        engine.generate([Request(p, max_new_tokens=30, observer=lambda s, c, i=i: seen[i].append(s))
                         for i, p in enumerate(chosen)])
        return [torch.stack(s) for s in seen]

    batch = scores(prompts)
    for i in (0, 15):
        assert torch.equal(scores([prompts[i]])[0], batch[i])


def test_padded_batch_attention_gpu_path_agrees_and_is_batch_invariant(ours, sixteen):
    """The GPU's attention (one padded call for all decoding rows), run here on the CPU."""

    def scores(model, prompts, padded):
        seen: list[list[torch.Tensor]] = [[] for _ in prompts]
        engine = Engine(model, config=EngineConfig(kv_cache_mb=4))
        engine.runner.padded_attention = padded
        engine.generate([Request(p, max_new_tokens=12, observer=lambda s, c, i=i: seen[i].append(s))
                         for i, p in enumerate(prompts)])
        return seen

    exact, padded = scores(ours, sixteen, False), scores(ours, sixteen, True)
    assert max(float((a - b).abs().max()) for x, y in zip(exact, padded) for a, b in zip(x, y)) < 1e-4
    model = copy.deepcopy(ours).to(torch.bfloat16)
    batch, alone = scores(model, sixteen, True), scores(model, [sixteen[3]], True)
    assert all(torch.equal(a, b) for a, b in zip(alone[0], batch[3]))


def test_sequences_join_and_leave_every_step(ours, sixteen):
    """A request submitted mid-run joins the running batch; a short one leaves early."""
    expected, _ = run(ours, sixteen[:3])
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=4))
    first = engine.submit(Request(sixteen[0], max_new_tokens=24))
    short = engine.submit(Request(sixteen[1], max_new_tokens=3))
    for _ in range(6):
        engine.step()
    assert short.finished and not first.finished
    late = engine.submit(Request(sixteen[2], max_new_tokens=24))
    engine.step()
    assert engine.metrics().running == 2  # the late one joined the first one's batch
    engine.run()
    assert [first.token_ids, short.token_ids, late.token_ids] == [expected[0], expected[1][:3], expected[2]]


def test_paged_cache_grows_by_blocks_within_the_budget(ours):
    config = EngineConfig(kv_cache_mb=1, block_size=16)
    engine = Engine(ours, config=config)
    per_block = 2 * 2 * 2 * 16 * 16 * 4  # k/v x layers x kv heads x block x head dim x fp32
    assert engine.metrics().kv_blocks_total == 2**20 // per_block
    handle = engine.submit(Request([5] * 20, max_new_tokens=40))
    engine.step()
    assert engine.metrics().kv_blocks_used == 2  # the 20-token prompt, not its maximum length
    for _ in range(12):
        engine.step()
    assert engine.metrics().kv_blocks_used == 2  # 32 tokens in the cache
    engine.step()
    assert engine.metrics().kv_blocks_used == 3  # the 33rd needs a third block
    engine.run()
    assert len(handle.token_ids) == 40 and engine.metrics().kv_blocks_used == 0


def test_prefix_cache_reuses_shared_blocks(ours, sixteen):
    system = sixteen[5] + sixteen[6]  # a long shared prefix
    prompts = [system + [7, 8, 9], system + [10, 11]]
    expected, _ = run(ours, prompts[1:])
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=4, block_size=8))
    first = engine.generate([Request(prompts[0], max_new_tokens=8)])[0]
    second = engine.generate([Request(prompts[1], max_new_tokens=24)])[0]
    assert first.cached_tokens == 0
    assert second.cached_tokens == len(system) // 8 * 8
    assert second.token_ids == expected[0]
    assert engine.metrics().prefix_cache_hit_rate > 0


def test_prefix_cache_keys_include_the_adapter(ours):
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=4, block_size=8))
    engine.generate([Request(list(range(3, 40)), max_new_tokens=2)])
    from lmstack.generate.kv_cache import prefix_hashes

    tokens = list(range(3, 40))
    assert prefix_hashes(tokens, 8, None) != prefix_hashes(tokens, 8, "my-adapter")
    assert engine.pool.lookup(prefix_hashes(tokens, 8, "my-adapter")) == []
    assert len(engine.pool.lookup(prefix_hashes(tokens, 8, None))) == len(tokens) // 8


def test_chunked_prefill_matches_and_lets_decoding_continue(ours, sixteen):
    long_prompt = (sixteen[0] * 8)[:200]
    expected, _ = run(ours, [long_prompt, sixteen[1]])
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=4, max_batch_tokens=32))
    decoding = engine.submit(Request(sixteen[1], max_new_tokens=24))
    engine.step()
    long = engine.submit(Request(long_prompt, max_new_tokens=24))
    before = len(decoding.token_ids)
    for _ in range(3):  # the long prompt needs 7 chunks of 32; the other request keeps decoding
        engine.step()
    engine._sync()
    assert len(decoding.token_ids) == before + 3 and not long.token_ids
    engine.run()
    assert [long.token_ids, decoding.token_ids] == expected


def test_preemption_when_blocks_run_out_instead_of_a_crash(ours, sixteen):
    prompts = [p[:10] + [9] * 20 for p in sixteen[:6]]
    expected, _ = run(ours, prompts, max_new_tokens=40)
    tight = EngineConfig(kv_cache_mb=0.06, block_size=8)  # 15 blocks of 8: far less than 6 x 70 tokens
    got, engine = run(ours, prompts, config=tight, max_new_tokens=40)
    assert got == expected
    assert engine.metrics().preemptions > 0


def test_a_request_larger_than_the_cache_is_refused_or_shortened(ours, caplog):
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=0.06, block_size=8))
    with pytest.raises(LmstackError, match="raise kv_cache_mb"):
        engine.submit(Request([5] * 200))
    handle = engine.submit(Request([5] * 100, max_new_tokens=100))
    assert handle.limit == engine.capacity - 100 and "max_new_tokens lowered" in caplog.text


def test_cancel_ends_one_request_only(ours, sixteen):
    expected, _ = run(ours, sixteen[:2])
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=4))
    a = engine.submit(Request(sixteen[0], max_new_tokens=24))
    b = engine.submit(Request(sixteen[1], max_new_tokens=24, stream=True))
    for _ in range(5):
        engine.step()
    b.cancel()
    engine.run()
    assert b.finish_reason == "cancelled" and 0 < len(b.token_ids) < 24 and b.token_ids == expected[1][:len(b.token_ids)]
    assert a.token_ids == expected[0] and a.finish_reason == "length"


def test_streaming_is_iteration_and_reads_back_lazily(ours, sixteen):
    expected, _ = run(ours, sixteen[:1])
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=4, sync_interval=8))
    streamed = engine.submit(Request(sixteen[0], max_new_tokens=24, stream=True))
    pieces = [out.token_ids for out in streamed]
    assert len(pieces) == 24 and sum(pieces, []) == expected[0]
    lazy = engine.submit(Request(sixteen[0], max_new_tokens=24))
    pieces = [out.token_ids for out in lazy]
    # The first token comes at once; after it the host reads tokens back every 8 steps.
    assert [len(p) for p in pieces] == [1, 8, 8, 7] and sum(pieces, []) == expected[0]


def test_stop_tokens_found_at_a_later_read_are_cut(ours, sixteen):
    free, _ = run(ours, sixteen[:1])
    stop = free[0][5]
    got, _ = run(ours, sixteen[:1], config=EngineConfig(kv_cache_mb=4, sync_interval=16), stop_token_ids=[stop])
    assert got[0] == free[0][: free[0].index(stop) + 1]


def test_seeded_sampling_is_per_request_whatever_the_batch(ours, sixteen):
    sampling = SamplingConfig(temperature=1.0, top_k=40)
    alone, _ = run(ours, sixteen[:1], sampling=sampling, seed=11)
    mixed, _ = run(ours, sixteen[:4], sampling=sampling, seed=11)
    assert mixed[0] == alone[0]
    assert mixed[1] != mixed[0]


def test_background_thread_serves_concurrent_submitters(ours, sixteen):
    expected, _ = run(ours, sixteen[:6])
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=4))
    engine.start()
    results: dict[int, list[int]] = {}

    def client(i: int) -> None:
        handle = engine.submit(Request(sixteen[i], max_new_tokens=24, stream=True))
        results[i] = [t for out in handle for t in out.token_ids]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    engine.stop()
    assert [results[i] for i in range(6)] == expected


def test_metrics(ours, sixteen):
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=4, max_running=2))
    handles = [engine.submit(Request(p, max_new_tokens=8)) for p in sixteen[:4]]
    engine.step()
    m = engine.metrics()
    assert (m.running, m.waiting) == (2, 2) and m.kv_blocks_used > 0
    engine.run()
    m = engine.metrics()
    assert m.running == m.waiting == m.kv_blocks_used == 0
    assert m.tokens_per_second > 0 and m.time_to_first_token > 0 and m.steps > 0
    assert all(h.time_to_first_token > 0 for h in handles)


def test_generate_ids_runs_on_the_engine_and_keeps_the_prefix_cache(ours, sixteen):
    from lmstack.generate.generate import engine_for

    first = generate_ids(ours, [sixteen[2]], max_new_tokens=8)
    engine = engine_for(ours)
    again = generate_ids(ours, [sixteen[2]], max_new_tokens=8)
    assert again == first and engine.metrics().prefix_cache_hit_rate > 0


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(kv_cache_mb=0), "kv_cache_mb must be > 0"),
        (dict(block_size=12), "block_size must be one of"),
        (dict(max_batch_tokens=0), "max_batch_tokens must be in"),
        (dict(max_running=0), "max_running must be in"),
    ],
)
def test_engine_config_is_checked(config, message):
    with pytest.raises(LmstackError, match=message):
        EngineConfig(**config)


def test_a_request_whose_grammar_fails_ends_alone(ours, sixteen):
    """A constraint that raises (a grammar dead end) fails its own request, not the step."""
    expected, _ = run(ours, sixteen[:1])

    class DeadEnd:
        def start(self):
            pass

        def mask_logits(self, scores):
            raise LmstackError("structured output is stuck: nothing fits")

    engine = Engine(ours, config=EngineConfig(kv_cache_mb=4))
    fine = engine.submit(Request(sixteen[0], max_new_tokens=24))
    stuck = engine.submit(Request(sixteen[1], max_new_tokens=24, constraint=DeadEnd()))
    engine.run()
    assert stuck.finish_reason == "error" and "nothing fits" in stuck.error and stuck.token_ids == []
    assert fine.token_ids == expected[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_weights_agree_and_follow_weight_changes(ours, sixteen, dtype):
    """Fused q/k/v and gate/up (the GPU's default; oneDNN-packed on a CPU in bf16) give the
    unfused model's outputs, and a weight changed in place (a training step) is seen at once."""
    from lmstack.model.transformer import FusedLinear

    def scores(model, fuse):
        seen: list[list[torch.Tensor]] = [[] for _ in range(4)]
        engine = Engine(model, config=EngineConfig(kv_cache_mb=4, fuse_weights=fuse))
        handles = engine.generate([Request(p, max_new_tokens=12, observer=lambda s, c, i=i: seen[i].append(s))
                                   for i, p in enumerate(sixteen[:4])])
        return [h.token_ids for h in handles], torch.stack([torch.stack(s) for s in seen])

    model = copy.deepcopy(ours).to(dtype)
    tolerance = 1e-4 if dtype == torch.float32 else 0.1
    plain_tokens, plain = scores(model, False)
    fused_tokens, fused = scores(model, True)
    assert isinstance(model.model.layers[0].self_attn.qkv, FusedLinear)
    assert isinstance(model.model.layers[1].mlp.gate_up, FusedLinear)
    assert fused_tokens == plain_tokens and (fused - plain).abs().max() < tolerance
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.mul_(3.0)
    changed_tokens, changed = scores(model, True)
    reference_tokens, reference = scores(copy.deepcopy(model), False)  # a copy drops the fused weights
    assert (changed - plain).abs().max() > 1.0  # the change matters...
    assert changed_tokens == reference_tokens and (changed - reference).abs().max() < tolerance  # ...and is used


@pytest.mark.parametrize("method", ["int8", "int4", "nf4"])
def test_quantized_weights_run_on_the_engine(ours, sixteen, method, monkeypatch):
    """A model quantized by the quant stage decodes on the paged cache exactly as full forward passes
    of the same quantized model, without any cache, pick their greedy tokens.

    The CPU's int8/int4 kernels (bf16 activations) serve only matmuls of at most KERNEL_MAX_ROWS
    rows, so a decode step and a full forward would round differently: they are off here, and
    both sides compute through the dequantized weights."""
    from lmstack.model import quantized
    from lmstack.model.quantized import quantized_layers
    from lmstack.quant.methods import quantize_model
    from lmstack.quant.settings import QuantSettings

    monkeypatch.setattr(quantized, "KERNEL_MAX_ROWS", 0)
    model = copy.deepcopy(ours)
    quantize_model(model, QuantSettings(method=method, search=0))
    assert len(quantized_layers(model)) >= 14  # every linear layer of both blocks
    got, _ = run(model, sixteen[:4], max_new_tokens=12)
    for prompt, tokens in zip(sixteen[:4], got):
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            for _ in range(12):
                ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert tokens == ids[0, len(prompt):].tolist()
