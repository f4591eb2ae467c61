"""The engine on a GPU in one short run: greedy parity, batch invariance, decode and prefill speed.

    PYTHONPATH=. python bench/gpu_check.py [--device cuda] [--dtype bf16] [--layers 30]

Needs torch and this checkout only: the model is SmolLM2-135M's architecture (30 layers, 576
wide, 9 query and 3 key/value heads, 49152-token vocabulary) with random weights, so nothing is
downloaded. Four checks, each printed as it finishes:

1. Parity (fp32, TF32 off): four prompts of different lengths go through the engine together
   (continuous batching, paged KV cache, chunked prefill, on a GPU the padded decode attention
   and the fused q/k/v and gate/up weights); each one's greedy tokens must equal plain greedy
   decoding that runs the whole sequence through the model again at every step, without any
   cache. A mismatch prints the reference's top-2 logit margin there and fails the run.
2. Batch invariance (the speed dtype): a prompt alone and inside a batch of 16 gives the same
   tokens, with the engine's defaults and with `batch_invariant=True` (a lone token runs as two
   rows). Reported, not failed: GPU matmul kernels may change with the batch's size.
3. Decode tokens/s at batch 1 and aggregated over a batch of 16: a 129-token generation minus a
   1-token one, `--prompt-tokens` each, best of `--repeats`, prefix caching off.
4. Prefill tokens/s: one prompt of `--prefill-tokens` alone, and 16 of them at once.

Exits 1 when parity fails. `--device cpu` runs the same on a CPU (slower; fewer `--layers` help).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from lmstack.generate.engine import Engine, EngineConfig, Request
from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Transformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NEW_TOKENS = 128


def smollm2_config(layers: int) -> ModelConfig:
    return ModelConfig(family="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=layers,
                       num_heads=9, num_kv_heads=3, head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-5,
                       rope_theta=100000.0, tie_word_embeddings=True)


def random_model(config: ModelConfig, device: str, seed: int) -> Transformer:
    """Random weights with a spread wide enough that greedy picks are rarely near-ties."""
    torch.manual_seed(seed)
    model = Transformer(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.08)
    return model.eval().to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reference_greedy(model: Transformer, prompt: list[int], new_tokens: int) -> tuple[list[int], list[float]]:
    """Greedy tokens from full forward passes (no cache at all), and each step's top-2 margin."""
    ids = torch.tensor([prompt], device=model.device)
    tokens, margins = [], []
    with torch.inference_mode():
        for _ in range(new_tokens):
            logits = model(ids)[0, -1]
            top = logits.topk(2).values
            token = int(logits.argmax())
            tokens.append(token)
            margins.append(float(top[0] - top[1]))
            ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)
    return tokens, margins


def engine_greedy(engine: Engine, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    handles = engine.generate([Request(p, max_new_tokens=new_tokens) for p in prompts])
    return [h.token_ids for h in handles]


def check_parity(config: ModelConfig, args, prompts: list[list[int]]) -> bool:
    model = random_model(config, args.device, args.seed)  # fp32
    expected = [reference_greedy(model, p, args.parity_tokens) for p in prompts]  # before the engine fuses weights
    # Small blocks and chunks so the prompts span several blocks and the long one is read in chunks.
    engine = Engine(model, config=EngineConfig(kv_cache_mb=256, block_size=16, max_batch_tokens=64))
    got = engine_greedy(engine, prompts, args.parity_tokens)
    ok = True
    for prompt, (tokens, margins), ours in zip(prompts, expected, got):
        if ours == tokens:
            print(f"  prompt of {len(prompt):3d} tokens: {len(ours)} greedy tokens equal "
                  f"(smallest top-2 margin {min(margins):.4f})")
            continue
        ok = False
        at = next(i for i, (a, b) in enumerate(zip(ours, tokens)) if a != b) if len(ours) == len(tokens) else \
            min(len(ours), len(tokens))
        margin = margins[at] if at < len(margins) else float("nan")
        print(f"  prompt of {len(prompt):3d} tokens: MISMATCH at new token {at} (engine {ours[at:at + 4]}, "
              f"reference {tokens[at:at + 4]}; reference top-2 margin there {margin:.5f})")
    engine.close()
    del engine, model
    return ok


def check_batch_invariance(model: Transformer, prompts: list[list[int]], new_tokens: int) -> None:
    for invariant in (False, True):
        engine = Engine(model, config=EngineConfig(kv_cache_mb=1024, batch_invariant=invariant))
        batch = engine_greedy(engine, prompts, new_tokens)
        alone = [engine_greedy(engine, [prompts[i]], new_tokens)[0] for i in (0, 7, 15)]
        same = [a == batch[i] for a, i in zip(alone, (0, 7, 15))]
        print(f"  batch_invariant={invariant}: prompts 0, 7, 15 alone vs in a batch of 16 ({new_tokens} tokens): "
              + ", ".join("same" if s else "DIFFERENT" for s in same))


def best_time(device: str, repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def decode_speed(engine: Engine, prompts: list[list[int]], device: str, repeats: int) -> float:
    first = best_time(device, repeats, lambda: engine_greedy(engine, prompts, 1))
    total = best_time(device, repeats, lambda: engine_greedy(engine, prompts, NEW_TOKENS + 1))
    return len(prompts) * NEW_TOKENS / max(total - first, 1e-9)


def prefill_speed(engine: Engine, prompts: list[list[int]], device: str, repeats: int) -> float:
    return sum(map(len, prompts)) / best_time(device, repeats, lambda: engine_greedy(engine, prompts, 1))


def random_prompts(vocab: int, lengths: list[int], seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(100, vocab - 100, (n,), generator=g).tolist() for n in lengths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="dtype of the speed and batch checks (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--layers", type=int, default=30, help="SmolLM2-135M has 30")
    parser.add_argument("--parity-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=64, help="prompt length of the decode runs")
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--max-batch-tokens", type=int, default=EngineConfig.max_batch_tokens,
                        help="the engine's tokens per step (prompts are read in chunks of this size)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (cpu only)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here; run with --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = DTYPES[args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")]
    config = smollm2_config(args.layers)
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; SmolLM2-135M shape, {args.layers} layers, random weights")
    started = time.perf_counter()

    print("1. greedy parity with full-forward decoding (fp32):")
    parity = check_parity(config, args, random_prompts(config.vocab_size, [5, 37, 100, 230], args.seed))

    model = random_model(config, args.device, args.seed).to(dtype)
    engine = Engine(model, config=EngineConfig(kv_cache_mb=1024, prefix_caching=False,
                                               max_batch_tokens=args.max_batch_tokens))
    sixteen = random_prompts(config.vocab_size, [args.prompt_tokens] * 16, args.seed + 1)
    engine_greedy(engine, sixteen[:2], 4)  # warm-up: kernels, allocator
    print(f"2. batch invariance ({str(dtype).removeprefix('torch.')}):")
    check_batch_invariance(model, random_prompts(config.vocab_size, [3 + i for i in range(16)], args.seed + 2),
                           32)
    print(f"3. decode ({str(dtype).removeprefix('torch.')}, prompts of {args.prompt_tokens} tokens, "
          f"{NEW_TOKENS} new tokens each):")
    print(f"  batch 1:  {decode_speed(engine, sixteen[:1], args.device, args.repeats):8.1f} tokens/s")
    print(f"  batch 16: {decode_speed(engine, sixteen, args.device, args.repeats):8.1f} tokens/s (all rows together)")
    print(f"4. prefill ({args.prefill_tokens}-token prompts):")
    long = random_prompts(config.vocab_size, [args.prefill_tokens] * 16, args.seed + 3)
    print(f"  1 prompt:   {prefill_speed(engine, long[:1], args.device, args.repeats):8.1f} tokens/s")
    print(f"  16 prompts: {prefill_speed(engine, long, args.device, args.repeats):8.1f} tokens/s")
    if args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(args.device) / 2**20:.0f} MiB")
    print(f"done in {time.perf_counter() - started:.0f} s: parity {'PASSED' if parity else 'FAILED'}")
    sys.exit(0 if parity else 1)


if __name__ == "__main__":
    main()
