"""Pre-training speed and MinHash dedup speed, each side by side with its peers in one run.

    python bench/pretrain_speed.py [--depth 4] [--seq-len 256] [--batch-size 8] [--steps 12]
                                   [--threads N] [--precision fp32|bf16] [--device auto|cpu|cuda]
                                   [--litgpt-python PATH] [--dedup-docs 5000] [--which train,dedup]
                                   [--repeats 2]

train: the same model shape (lmstack's `--depth` sizing: width 64 x depth, head_dim 64, SwiGLU
8/3, tied embeddings, RoPE, RMSNorm), the same tokenizer, token shards, sequence length, batch,
AdamW settings and gradient clipping, on windows of the Python standard library's source:

    lmstack    `train_recipe` with the pretrain objective (the real command's path: the shared
               trainer core, memory-mapped shard windows)
    plain      a nanoGPT-style loop written here: a minimal Llama in plain PyTorch, random windows
               from the same memory-mapped shards, AdamW, clip, step
    litgpt     LitGPT's own model (`litgpt.GPT`, same shape; LitGPT does not tie the embeddings, so
               it has one more vocab x width matrix) in the same plain loop; run with the
               interpreter given by --litgpt-python (its pins conflict with our test extras),
               skipped when LitGPT does not import there

Each engine runs in its own subprocess under the same thread count, so its peak memory (max RSS,
or CUDA max allocated) is its own; the engines take turns `--repeats` times and each one's best
run counts. The first optimizer step is a warm-up and excluded; tokens/s
is (steps - 1) x batch x seq_len over the time from the end of step 1 to the end of the last.

dedup: near-duplicate detection (MinHash, 128 permutations, word 5-grams, LSH threshold 0.8) on
paragraphs of the standard library with planted near-copies:

    lmstack    `Deduplicator` (exact-hash prefilter, `MinHash.bulk` with CRC32 shingle hashing,
               LSH, Jaccard-confirmed), 1 and 2 worker processes
    datasketch used directly, as its documentation shows: `MinHash.update` per shingle (SHA-1),
               `MinHashLSH` query then insert
    text-dedup is not on PyPI (it installs from its repository only), so it is not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STDLIB = Path(sysconfig.get_paths()["stdlib"])
PACKAGES = ("json", "email", "logging", "importlib", "urllib", "http", "xml/dom", "asyncio", "unittest",
            "concurrent/futures", "multiprocessing")


# --- the shared corpus ----------------------------------------------------------------------------


def stdlib_files() -> list[Path]:
    return [p for package in PACKAGES for p in sorted((STDLIB / package).glob("*.py")) if p.stat().st_size]


def prepare(folder: Path, vocab_size: int) -> tuple[Path, Path]:
    """(tokenizer folder, shard folder) made by lmstack from the standard-library corpus."""
    from lmstack.pretrain.pipeline import prepare_shards
    from lmstack.pretrain.tokenizer_training import train_tokenizer
    from lmstack.tokenizer import Tokenizer

    files = stdlib_files()
    train_tokenizer(files, folder / "tokenizer", [vocab_size])
    shards, _ = prepare_shards(files, Tokenizer.from_dir(folder / "tokenizer"), folder / "shards")
    return folder / "tokenizer", shards


# --- engines (each runs in its own process) -------------------------------------------------------


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_lmstack(args, tokenizer: Path, shards: Path, out: Path) -> dict:
    from lmstack.train.recipe import load_recipe
    from lmstack.train.run import train_recipe

    recipe = load_recipe(None, {
        "objective.loss": "pretrain", "model.depth": args.depth, "model.tokenizer": str(tokenizer), "model.ref": "",
        "method.type": "full", "data.train": str(shards), "data.max_len": args.seq_len + 1, "data.val_fraction": 0.0,
        "run.steps": args.steps, "run.batch_size": args.batch_size, "run.out_dir": str(out), "run.log_every": 1,
        "optimizer.lr": 1e-3, "optimizer.betas": [0.9, 0.95], "optimizer.weight_decay": 0.1,
        "optimizer.schedule": "constant", "model.precision": args.precision, "model.device": args.device,
        "run.deterministic": False})
    result = train_recipe(recipe, overwrite=True)  # a repeat reuses the run folder
    # The core logs each step's tokens/s over the tokens it read (batch x (seq_len + 1) per step).
    step_tokens = args.batch_size * (args.seq_len + 1)
    seconds = sum(step_tokens / record["tokens_per_s"] for record in result.train.history if record["step"] > 1)
    from lmstack.device import resolve_device
    from lmstack.model import hf_io
    from lmstack.pretrain.sizing import parameter_count

    return {"seconds": seconds, "memory_mb": peak_memory_mb(resolve_device(args.device)),
            "parameters": parameter_count(hf_io.read_config(result.output)), "final_loss": result.train.metrics["loss"]}


class PlainLlama:
    """Built lazily so the module imports without torch."""

    @staticmethod
    def build(vocab: int, width: int, depth: int, heads: int, intermediate: int, seq_len: int):
        import torch
        import torch.nn.functional as F
        from torch import nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.norm1, self.norm2 = nn.RMSNorm(width, eps=1e-5), nn.RMSNorm(width, eps=1e-5)
                self.qkv = nn.Linear(width, 3 * width, bias=False)
                self.proj = nn.Linear(width, width, bias=False)
                self.gate_up = nn.Linear(width, 2 * intermediate, bias=False)
                self.down = nn.Linear(intermediate, width, bias=False)

            def forward(self, x, cos, sin):
                B, T, _ = x.shape
                q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
                q, k = rope(q, cos, sin), rope(k, cos, sin)
                attention = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + self.proj(attention.transpose(1, 2).reshape(B, T, width))
                gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
                return x + self.down(F.silu(gate) * up)

        def rope(x, cos, sin):
            half = x.shape[-1] // 2
            return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(vocab, width)
                self.blocks = nn.ModuleList(Block() for _ in range(depth))
                self.norm = nn.RMSNorm(width, eps=1e-5)
                head_dim = width // heads
                inv = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
                angles = torch.outer(torch.arange(seq_len).float(), inv)
                angles = torch.cat([angles, angles], dim=-1)
                self.register_buffer("cos", angles.cos(), persistent=False)
                self.register_buffer("sin", angles.sin(), persistent=False)

            def forward(self, ids):
                x = self.embed(ids)
                cos, sin = self.cos[: ids.shape[1]], self.sin[: ids.shape[1]]
                for block in self.blocks:
                    x = block(x, cos, sin)
                return self.norm(x) @ self.embed.weight.T  # tied output head

        return Model()


def plain_loop(model, args, shards: Path) -> dict:
    """nanoGPT's loop: random windows from the memory map, forward, loss, backward, clip, AdamW."""
    import contextlib

    import numpy as np
    import torch
    import torch.nn.functional as F

    from lmstack.device import resolve_device

    device = resolve_device(args.device)
    model.to(device).train()
    index = json.loads((shards / "index.json").read_text())
    data = np.memmap(shards / index["shards"][0]["file"], dtype=index["dtype"], mode="r")
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.95))
    rng = np.random.default_rng(0)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())
    started = None
    for step in range(args.steps):
        starts = rng.integers(0, len(data) - args.seq_len - 1, args.batch_size)
        batch = torch.from_numpy(np.stack([data[s:s + args.seq_len + 1].astype(np.int64) for s in starts])).to(device)
        with autocast:
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step == 0:
            started = time.perf_counter()
    parameters = sum(p.numel() for p in model.parameters())
    return {"seconds": time.perf_counter() - started, "memory_mb": peak_memory_mb(device), "parameters": parameters,
            "final_loss": loss.item()}


def shape(args, vocab: int) -> dict:
    width = 64 * args.depth
    return {"vocab": vocab, "width": width, "depth": args.depth, "heads": width // 64,
            "intermediate": -(-(8 * width // 3) // 32) * 32}


def run_plain(args, tokenizer: Path, shards: Path, out: Path) -> dict:
    import torch

    torch.manual_seed(0)
    s = shape(args, json.loads((shards / "index.json").read_text())["vocab_size"])
    return plain_loop(PlainLlama.build(seq_len=args.seq_len, **s), args, shards)


def run_litgpt(args, tokenizer: Path, shards: Path, out: Path) -> dict:
    import torch
    from litgpt import GPT, Config

    torch.manual_seed(0)
    s = shape(args, json.loads((shards / "index.json").read_text())["vocab_size"])
    config = Config(block_size=args.seq_len, vocab_size=s["vocab"], padded_vocab_size=s["vocab"], n_layer=s["depth"],
                    n_head=s["heads"], n_embd=s["width"], n_query_groups=s["heads"], rotary_percentage=1.0,
                    parallel_residual=False, bias=False, norm_class_name="RMSNorm", norm_eps=1e-5,
                    mlp_class_name="LLaMAMLP", intermediate_size=s["intermediate"])
    return plain_loop(GPT(config), args, shards)


ENGINES = {"lmstack": run_lmstack, "plain": run_plain, "litgpt": run_litgpt}


# --- dedup ----------------------------------------------------------------------------------------


def dedup_documents(count: int) -> list[str]:
    """Paragraphs of standard-library source, plus near-copies (one word changed) of a tenth of them."""
    paragraphs = []
    for path in sorted(STDLIB.glob("*.py")) + stdlib_files():
        for block in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            if len(block.split()) >= 20:
                paragraphs.append(block)
    if len(paragraphs) < count * 0.9:
        raise SystemExit(f"the standard library gives {len(paragraphs)} paragraphs; pass --dedup-docs "
                         f"{int(len(paragraphs) / 0.9)} or fewer")
    rng = random.Random(0)
    originals = paragraphs[: int(count * 0.9)]
    copies = []
    for text in rng.sample(originals, count - len(originals)):
        words = text.split(" ")
        words[rng.randrange(len(words))] = "changed"
        copies.append(" ".join(words))
    documents = originals + copies
    rng.shuffle(documents)
    return documents


def dedup_lmstack(documents: list[str], workers: int) -> int:
    from lmstack.data.dedup import Deduplicator

    return sum(Deduplicator(threshold=0.8, num_perm=128, workers=workers).keep(documents))


def dedup_datasketch(documents: list[str]) -> int:
    from datasketch import MinHash, MinHashLSH

    from lmstack.data.dedup import shingles

    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    kept = 0
    for i, text in enumerate(documents):
        m = MinHash(num_perm=128)
        for shingle in shingles(text):
            m.update(shingle)
        if not lsh.query(m):
            lsh.insert(i, m)
            kept += 1
    return kept


def bench_dedup(count: int) -> list[dict]:
    documents = dedup_documents(count)
    rows = []
    for name, run in (("lmstack (1 process)", lambda: dedup_lmstack(documents, 1)),
                      ("lmstack (2 processes)", lambda: dedup_lmstack(documents, 2)),
                      ("datasketch direct", lambda: dedup_datasketch(documents))):
        started = time.perf_counter()
        kept = run()
        seconds = time.perf_counter() - started
        rows.append({"engine": name, "docs_per_s": len(documents) / seconds, "kept": kept, "docs": len(documents)})
    return rows


# --- main -----------------------------------------------------------------------------------------


def version(package: str, python: str | None = None) -> str:
    if python and python != sys.executable:
        code = f"from importlib import metadata; print(metadata.version({package!r}))"
        done = subprocess.run([python, "-c", code], capture_output=True, text=True)
        return done.stdout.strip() or "not installed"
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--litgpt-python", default=sys.executable)
    parser.add_argument("--dedup-docs", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2, help="Runs per engine, alternating; the best counts.")
    parser.add_argument("--which", default="train,dedup")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        folder = Path(args.folder)
        result = ENGINES[args.worker](args, folder / "tokenizer", folder / "shards", folder / f"run-{args.worker}")
        print("RESULT " + json.dumps(result))
        return
    from lmstack.device import describe_cpu

    print(f"machine: {describe_cpu()}, {os.cpu_count()} cores, {platform.python_version()}; threads {args.threads}; "
          f"torch {version('torch')}, datasketch {version('datasketch')}, litgpt {version('litgpt', args.litgpt_python)}")
    which = args.which.split(",")
    if "train" in which:
        bench_training(args)
    if "dedup" in which:
        rows = bench_dedup(args.dedup_docs)
        print(f"\nMinHash dedup, {rows[0]['docs']} documents (10% planted near-copies)\n")
        print("| engine | docs/s | kept | vs datasketch direct |\n|---|---|---|---|")
        for row in rows:
            print(f"| {row['engine']} | {row['docs_per_s']:.0f} | {row['kept']} | "
                  f"{row['docs_per_s'] / rows[-1]['docs_per_s']:.2f}x |")


def bench_training(args) -> None:
    os.environ.setdefault("LMSTACK_REGISTRY", str(Path(tempfile.mkdtemp()) / "registry.db"))
    with tempfile.TemporaryDirectory(prefix="lmstack-bench-") as folder:
        prepare(Path(folder), args.vocab_size)
        results: dict[str, dict] = {}
        for _ in range(args.repeats):  # engines alternate, so a burst of load hits all of them alike
            for engine in ENGINES:
                python = args.litgpt_python if engine == "litgpt" else sys.executable
                command = [python, __file__, "--worker", engine, "--folder", folder, *sys.argv[1:]]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
                done = subprocess.run(command, capture_output=True, text=True, env=env)
                lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if not lines:
                    print(f"{engine}: skipped ({(done.stderr.strip().splitlines() or ['no output'])[-1]})")
                    continue
                result = json.loads(lines[-1][len("RESULT "):])
                if engine not in results or result["seconds"] < results[engine]["seconds"]:
                    results[engine] = result  # the best of the repeats
        tokens = (args.steps - 1) * args.batch_size * args.seq_len
        print(f"\npre-training, depth {args.depth} (width {64 * args.depth}), seq {args.seq_len}, batch {args.batch_size}, "
              f"{args.steps} steps (first excluded), {args.precision}\n")
        print("| engine | parameters | tokens/s | peak memory MB | lmstack / engine (speed) |\n|---|---|---|---|---|")
        base = tokens / results["lmstack"]["seconds"] if "lmstack" in results else None
        for engine, r in results.items():
            speed = tokens / r["seconds"]
            ratio = f"{base / speed:.2f}x" if base else "n/a"
            print(f"| {engine} | {r['parameters'] / 1e6:.2f}M | {speed:.0f} | {r['memory_mb']:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
