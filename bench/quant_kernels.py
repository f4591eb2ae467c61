"""Which CPU matmul wins for one decoding row at SmolLM2's shapes, the output head included.

    python bench/quant_kernels.py [--threads 2] [--no-compile] [--repeats 20]

Decoding multiplies one row of activations by every weight matrix once per token, so a matmul
at batch 1 costs the bytes of its weight. For each of SmolLM2-135M's linear shapes (out x in) this
times, side by side in one run, microseconds per call of:

- `fp32` / `bf16`: `F.linear` with float weights (the unquantized model, and a bf16 copy);
- `int8 layer`: lmstack's `Int8Linear` (per-row scales) as it runs: activations cast to bf16,
  `_weight_int8pack_mm`, cast back;
- `int8pack fp32`: the same kernel given float32 activations;
- `int8 dequant`: dequantize the weight to float32, then `F.linear` (lmstack's path for many rows);
- `int8 compiled`: `torch.compile` of that dequantize-and-multiply (inductor may fuse it);
- `int4 layer`: lmstack's `Int4Linear` (groups of 32): bf16 activations, `_weight_int4pack_mm_for_cpu`;
- `int4 dequant` / `int4 compiled`: as for int8, from the packed nibbles.

The last table weights each shape by how often a decoding step uses it (7 projections x 30
layers and the head) to give one step's matmul time per candidate, as a ratio to fp32. Each
candidate cycles through copies of its weights (128 MB of float32 per shape) so that, as in a
real model, no weight is still in cache when it is read again. The weights are random: speed does
not depend on their values.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

# SmolLM2-135M: hidden 576, MLP 1536, 9 query heads and 3 key/value heads of 64, 30 layers,
# a 49152-token vocabulary; (out, in) -> uses per decoding step.
SHAPES = {
    "q, o  576x576": ((576, 576), 60),
    "k, v  192x576": ((192, 576), 60),
    "gate, up  1536x576": ((1536, 576), 60),
    "down  576x1536": ((576, 1536), 30),
    "head  49152x576": ((49152, 576), 1),
}
GROUP = 32


COLD_BYTES = 128e6  # float32 bytes of weights per shape, cycled through so caches stay cold as in a model


def time_calls(calls: list[Callable[[], torch.Tensor]], repeats: int) -> float:
    """Median microseconds of one call, cycling through `calls` (one per weight copy) after a warm-up."""
    for call in calls:
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for call in calls:
            call()
        samples.append((time.perf_counter() - start) / len(calls))
    return 1e6 * statistics.median(samples)


def int8_dequant(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return F.linear(x, qweight.float() * scales)


def int4_dequant(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    from lmstack.model.quantized import unpack_int4

    q = unpack_int4(packed).float().unflatten(-1, (scales.shape[-1], -1))
    return F.linear(x, (q * scales.float().unsqueeze(-1) + mins.float().unsqueeze(-1)).flatten(-2))


def candidates(out_features: int, in_features: int, compiled: dict[str, Callable]) -> dict[str, list[Callable]]:
    """Each candidate as one call per weight copy (enough copies to exceed the CPU's caches)."""
    from lmstack.model.quantized import Int4Linear, Int8Linear, pack_int4

    torch.manual_seed(0)
    x = torch.randn(1, in_features)
    x_bf16 = x.bfloat16()
    runs: dict[str, list[Callable]] = {name: [] for name in ["fp32", "bf16", "int8 layer", "int8pack fp32",
                                                             "int8 dequant", "int4 layer", "int4 dequant",
                                                             *compiled]}
    for _ in range(max(1, int(COLD_BYTES // (4 * out_features * in_features)))):
        weight = torch.randn(out_features, in_features) / in_features ** 0.5
        weight_bf16 = weight.bfloat16()
        int8 = Int8Linear(torch.randint(-127, 128, (out_features, in_features), dtype=torch.int8),
                          torch.rand(out_features, 1) / 100)
        int4 = Int4Linear(pack_int4(torch.randint(0, 16, (out_features, in_features), dtype=torch.uint8)),
                          torch.rand(out_features, in_features // GROUP) / 100,
                          -torch.rand(out_features, in_features // GROUP) / 10)
        int8_args = (x, int8.qweight, int8.scales)
        int4_args = (x, int4.qweight, int4.scales, int4.mins)
        runs["fp32"].append(lambda w=weight: F.linear(x, w))
        runs["bf16"].append(lambda w=weight_bf16: F.linear(x_bf16, w))
        runs["int8 layer"].append(lambda layer=int8: layer(x))
        runs["int8pack fp32"].append(lambda layer=int8: torch.ops.aten._weight_int8pack_mm(
            x, layer.qweight, layer.scales.flatten()))
        runs["int8 dequant"].append(lambda a=int8_args: int8_dequant(*a))
        runs["int4 layer"].append(lambda layer=int4: layer(x))
        runs["int4 dequant"].append(lambda a=int4_args: int4_dequant(*a))
        for name, fn in compiled.items():
            runs[name].append(lambda fn=fn, a=(int8_args if name.startswith("int8") else int4_args): fn(*a))
    # the packed kernels compute the same products as the dequantized weights (to bf16 precision)
    for layer, reference in ((int8, int8_dequant(*int8_args)), (int4, int4_dequant(*int4_args))):
        assert (layer(x) - reference).abs().max() <= 0.02 * reference.abs().max(), layer.kind
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="Skip the torch.compile candidates.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lmstack.device import describe_cpu

    print(f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {describe_cpu()}, {args.threads} threads; "
          f"torch {torch.__version__}\n")
    compiled = {} if args.no_compile else {"int8 compiled": torch.compile(int8_dequant, dynamic=False),
                                           "int4 compiled": torch.compile(int4_dequant, dynamic=False)}
    micros: dict[str, dict[str, float]] = {}
    for label, ((out_features, in_features), _) in SHAPES.items():
        with torch.no_grad():
            runs = candidates(out_features, in_features, compiled)
            micros[label] = {name: time_calls(calls, args.repeats) for name, calls in runs.items()}
        print(f"timed {label}", flush=True)
    names = list(next(iter(micros.values())))
    lines = ["| shape (out x in) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, row in micros.items():
        lines.append(f"| {label} | " + " | ".join(f"{row[n]:.0f}" for n in names) + " |")
    step = {n: sum(micros[label][n] * uses for label, (_, uses) in SHAPES.items()) / 1000 for n in names}
    lines += ["", "| one decoding step's matmuls | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
              "| ms | " + " | ".join(f"{step[n]:.1f}" for n in names) + " |",
              "| speed vs fp32 | " + " | ".join(f"{step['fp32'] / step[n]:.2f}x" for n in names) + " |"]
    print("\nmicroseconds per call, one row of activations (median)\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
