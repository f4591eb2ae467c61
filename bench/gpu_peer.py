"""lmstack vs transformers on one device, same weights: greedy decode and a training step.

    PYTHONPATH=. python bench/gpu_peer.py [--device cuda] [--layers 30]

The model is SmolLM2-135M's architecture with random weights (nothing is downloaded): transformers
builds and initialises it, lmstack loads the same state dict. Three measurements, each printed as
a line with the ratio lmstack / transformers:

- decode tokens/s, bf16, at batch 1 and aggregated over 16: a 129-token greedy generation minus a
  1-token one (lmstack: its engine, prefix caching off; transformers: `generate` with its default
  dynamic cache, no early stop), best of `--repeats`;
- training tokens/s: forward, backward and an AdamW step on 8 x 512 tokens, fp32 weights under
  bf16 autocast, the mean of 5 steps after 2 warm-ups;
- before timing, the two models' fp32 logits on one prompt are compared (largest difference).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from lmstack.generate.engine import Engine, EngineConfig, Request
from lmstack.model.config import ModelConfig
from lmstack.model.weights import build_model

NEW_TOKENS = 128


def hf_config(layers: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                       num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                       rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
                       eos_token_id=2, initializer_range=0.08)


def timed(device: str, fn) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def best(device: str, repeats: int, fn) -> float:
    return min(timed(device, fn) for _ in range(repeats))


def decode_rate(generate, batch: int, device: str, repeats: int) -> float:
    generate(batch, 2)  # warm-up
    first = best(device, repeats, lambda: generate(batch, 1))
    total = best(device, repeats, lambda: generate(batch, NEW_TOKENS + 1))
    return batch * NEW_TOKENS / max(total - first, 1e-9)


def train_rate(model: torch.nn.Module, logits_of, vocab: int, device: str) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, vocab, (8, 512), device=device)

    def step() -> None:
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            logits = logits_of(ids)
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    seconds = sum(timed(device, step) for _ in range(5)) / 5
    return ids.numel() / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = args.device

    torch.manual_seed(0)
    config = hf_config(args.layers)
    hf = LlamaForCausalLM(config).eval()
    ours = build_model(ModelConfig.from_hf(config.to_dict()), {k: v.clone() for k, v in hf.state_dict().items()})
    hf, ours = hf.to(device), ours.eval().to(device)
    probe = torch.randint(100, 49000, (1, 48), device=device)
    with torch.inference_mode():
        gap = (hf(probe).logits - ours(probe)).abs().max().item()
    print(f"device {torch.cuda.get_device_name() if device.startswith('cuda') else device}, torch {torch.__version__}, "
          f"{args.layers} layers; fp32 logits, largest difference lmstack vs transformers: {gap:.2e}")

    hf_bf16, ours_bf16 = hf.to(torch.bfloat16), ours.to(torch.bfloat16)
    engine = Engine(ours_bf16, config=EngineConfig(kv_cache_mb=2048, prefix_caching=False))
    prompt = torch.randint(100, 49000, (args.prompt_tokens,)).tolist()

    def ours_generate(batch: int, n: int) -> None:
        engine.generate([Request(list(prompt), max_new_tokens=n) for _ in range(batch)])

    def hf_generate(batch: int, n: int) -> None:
        ids = torch.tensor([prompt] * batch, device=device)
        with torch.inference_mode():
            hf_bf16.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=0)

    for batch in (1, 16):
        a, b = decode_rate(ours_generate, batch, device, args.repeats), decode_rate(hf_generate, batch, device,
                                                                                  args.repeats)
        print(f"decode batch {batch:2d}: lmstack {a:8.1f} tok/s, transformers {b:8.1f} tok/s, ratio {a / b:.2f}")
    engine.close()
    del engine

    hf32, ours32 = hf_bf16.float().train(), ours_bf16.float().train()
    a = train_rate(ours32, lambda ids: ours32(ids), 49152, device)
    b = train_rate(hf32, lambda ids: hf32(ids).logits, 49152, device)
    print(f"train step 8x512: lmstack {a:9.0f} tok/s, transformers {b:9.0f} tok/s, ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
