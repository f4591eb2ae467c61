"""Throughput of concurrent requests: the lmstack engine vs transformers' batched generate.

    python bench/engine_throughput.py [--model smollm2-135m-instruct] [--requests 16] [--new-tokens 64]
                                      [--threads 2] [--dtype bf16] [--adapters 8]

Every run answers the same `--requests` chat prompts (each asks the model to repeat and continue
a passage, so prompt lookup has something to find), `--new-tokens` greedy tokens each, no early
stop, and reports aggregate new tokens per second over the whole batch (prompts included in the
time). Rows:
- transformers: one left-padded batch through `generate()` on the same weights and dtype;
- lmstack: the requests submitted at once to the engine (continuous batching, paged KV);
- lmstack, 1 request, without and with prompt lookup (n-gram speculative decoding, and its
  acceptance rate): the engine speculates only while few sequences decode;
- lmstack, 1 adapter / N adapters: every request names a LoRA adapter (r=16 on every linear layer,
  random weights), all the same one, or spread over N different ones, batched together.
Prints a Markdown table and the ratios measured in this run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from generation import version  # bench/ is on the path of a script run from it

PASSAGE = ("The river rises in the hills above the old mill town, runs past the stone bridge where the market is "
           "held every Saturday, and reaches the sea at a small harbour full of fishing boats.")
TOPICS = ["a river", "a bridge", "a market", "a harbour", "a mill", "a boat", "a town", "the sea"]


def prompts(loaded, n: int) -> list[list[int]]:
    messages = [[{"role": "user", "content": f"Repeat this passage word for word, then write two sentences about "
                                             f"{TOPICS[i % len(TOPICS)]}: {PASSAGE}"}] for i in range(n)]
    return [loaded.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True) for m in messages]


def run_engine(loaded, ids, new_tokens, *, speculative=None, adapters=None, loader=None) -> tuple[float, object]:
    from lmstack.generate.engine import Engine, EngineConfig, Request

    engine = Engine(loaded.model, config=EngineConfig(speculative=speculative), adapter_loader=loader)
    requests = lambda: [Request(p, max_new_tokens=new_tokens, adapter=adapters[i % len(adapters)] if adapters else None)
                        for i, p in enumerate(ids)]
    engine.generate(requests()[:2])  # warm up (and load the adapters)
    start = time.perf_counter()
    handles = engine.generate(requests())
    seconds = time.perf_counter() - start
    metrics = engine.metrics()
    engine.close()
    return sum(len(h.token_ids) for h in handles) / seconds, metrics


def run_transformers(loaded, ids, new_tokens) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(loaded.path, dtype=loaded.model.model.embed_tokens.weight.dtype).eval()
    width = max(map(len, ids))
    batch = torch.tensor([[0] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])

    def generate(rows: slice) -> None:
        with torch.inference_mode():
            model.generate(batch[rows], attention_mask=mask[rows], max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, pad_token_id=0)

    generate(slice(0, 2))
    start = time.perf_counter()
    generate(slice(None))
    return len(ids) * new_tokens / (time.perf_counter() - start)


def random_adapters(loaded, count: int, directory: str) -> list[str]:
    """`count` LoRA adapters (r=16, every linear layer but the head) with random weights, in peft's layout."""
    import copy

    from lmstack.peft import LoraConfig, apply_lora, save_adapter

    paths = []
    for i in range(count):
        torch.manual_seed(i)
        model = apply_lora(copy.deepcopy(loaded.model).float(), LoraConfig(r=16, alpha=16, init_lora_weights=False))
        for p in model.parameters():
            if p.requires_grad:
                p.data.mul_(0.1)  # small updates: the answers stay sensible
        paths.append(str(save_adapter(model, f"{directory}/adapter{i}", base_model=str(loaded.path),
                                      config=LoraConfig(r=16, alpha=16))))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--adapters", type=int, default=8, help="adapters in the many-adapters row (0 skips both rows)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import lmstack
    from lmstack.device import describe_cpu
    from lmstack.generate.speculative import SpeculativeConfig

    loaded = lmstack.load(args.model, dtype=args.dtype)
    ids = prompts(loaded, args.requests)
    rows: dict[str, str] = {}
    if version("transformers") != "not installed":
        rows["transformers (batched generate)"] = f"{run_transformers(loaded, ids, args.new_tokens):.1f}"
    speed, _ = run_engine(loaded, ids, args.new_tokens)
    rows["lmstack engine"] = f"{speed:.1f}"
    ours = speed
    # The engine speculates only while few sequences decode (SpeculativeConfig.max_batch): at 16
    # verifying drafts costs more than it saves, so speculation is measured on one request.
    alone, _ = run_engine(loaded, ids[:1], args.new_tokens)
    rows["lmstack, 1 request"] = f"{alone:.1f}"
    speed, metrics = run_engine(loaded, ids[:1], args.new_tokens, speculative=SpeculativeConfig("ngram"))
    acceptance = metrics.speculative_acceptance_rate
    rows["lmstack + prompt lookup, 1 request"] = f"{speed:.1f} ({speed / alone:.2f}x; drafts accepted: " + \
        (f"{acceptance:.2f})" if acceptance is not None else "none proposed)")
    if args.adapters:
        with tempfile.TemporaryDirectory() as directory:
            paths = random_adapters(loaded, args.adapters, directory)
            one, _ = run_engine(loaded, ids, args.new_tokens, adapters=paths[:1], loader=loaded.lora_factors)
            many, _ = run_engine(loaded, ids, args.new_tokens, adapters=paths, loader=loaded.lora_factors)
        rows["lmstack, 1 adapter"] = f"{one:.1f}"
        rows[f"lmstack, {args.adapters} adapters"] = f"{many:.1f}"

    dtype = str(loaded.model.model.embed_tokens.weight.dtype).removeprefix("torch.")
    print(f"cpu: {describe_cpu()}, {args.threads} threads, {dtype}; {args.requests} requests x {args.new_tokens} "
          f"new tokens, prompts of {min(map(len, ids))}-{max(map(len, ids))} tokens")
    print(f"versions: torch {torch.__version__}, transformers {version('transformers')}, lmstack {lmstack.__version__}")
    print("\n| engine | aggregate new tokens/s |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value} |")
    peer = rows.get("transformers (batched generate)")
    if peer:
        print(f"\nlmstack engine / transformers: {ours / float(peer):.2f}x")


if __name__ == "__main__":
    main()
