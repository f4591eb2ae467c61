"""Quantization: every method's size, quality and decode speed, and GGUF export vs llama.cpp.

    python bench/quant_speed.py [--model smollm2-135m-instruct] [--threads 2]
        [--methods int8,int4,gptq,...] [--gguf-types q8_0,q4_0,...] [--gguf-methods rtn,gptq,awq]

Part 1, lmstack's own format: for each method, the weights' size on disk, perplexity and mean KL
divergence against the unquantized model on held-out text (`lmstack:general_heldout`, 512-token
windows, float32), and greedy decode tokens/s at batch 1 (64 tokens after a short prompt, best
of 3) with float32 and bfloat16 activations.

Part 2, GGUF: llama.cpp quantizes our F32 export to each type with its own quantizer, lmstack
exports the same types with each method (both timed); llama.cpp scores every file on the same
windows (perplexity), lmstack gives the KL against the unquantized model; llama.cpp's decode
tokens/s on each file is what lmstack's formats of similar bits are compared with (int8 with
Q8_0, int4 with Q4_1: a 4-bit value and an fp16 scale and minimum per 32 weights). Everything is
measured in this one run; the registry is a temporary one.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

LMSTACK_METHODS = {
    "int8": {"method": "int8"},
    "int8-zeropoint": {"method": "int8", "scheme": "zeropoint"},
    "int8-group64": {"method": "int8", "granularity": "group", "group_size": 64},
    "llm-int8": {"method": "llm-int8"},
    "smoothquant": {"method": "smoothquant"},
    "nf4": {"method": "nf4", "head": "float"},
    "int4": {"method": "int4"},
    "int4-head4": {"method": "int4", "head": "int4"},
    "gptq": {"method": "gptq"},
    "awq": {"method": "awq"},
}


def quantize_one(model: str, name: str, out: Path):
    """(the saved model reloaded, seconds the quantization took)."""
    from lmstack.hub.load import load_model
    from lmstack.quant.calibration import calibration_text, calibration_windows
    from lmstack.quant.methods import quantize_model
    from lmstack.quant.settings import parse_settings, read_calibration_source
    from lmstack.quant.run import save_quantized

    settings = parse_settings(**LMSTACK_METHODS[name])
    bundle = load_model(model, device="cpu", dtype="fp32")
    start = time.perf_counter()
    windows = None
    if settings.calibrated:
        text = calibration_text(read_calibration_source(settings.calib), bundle.tokenizer)
        windows = calibration_windows(text, bundle.tokenizer, samples=settings.samples, seq_len=settings.seq_len)
    report = quantize_model(bundle.model, settings, windows)
    seconds = time.perf_counter() - start
    save_quantized(bundle, out, settings, report)
    return load_model(out, device="cpu", dtype="fp32"), seconds


def decode_speeds(bundle) -> tuple[float, float | None]:
    """Decode tokens/s with float32 activations, and with bfloat16 where the CPU has it natively."""
    from lmstack.device import native_bf16
    from lmstack.quant.quality import decode_speed

    from lmstack.hub.load import load_model

    fp32 = decode_speed(bundle, 64, repeats=3)
    if not native_bf16(torch.device("cpu")):
        return fp32, None
    return fp32, decode_speed(load_model(bundle.path, device="cpu", dtype="bf16"), 64, repeats=3)


def lmstack_table(args, reference, text: str, workdir: Path) -> list[str]:
    from lmstack.quant.quality import nll_and_kl, weights_size

    names, bundles, seconds = [], [], []
    for name in args.methods:
        bundle, took = quantize_one(args.model, name, workdir / name)
        names.append(name)
        bundles.append(bundle)
        seconds.append(took)
        print(f"quantized {name} in {took:.1f} s", flush=True)
    perplexities, kls = nll_and_kl(reference, bundles, text)
    lines = ["| model | size MB | perplexity | vs fp32 | KL | decode tok/s fp32 | x | decode tok/s bf16 | x | "
             "quantize s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base_fp32, base_bf16 = decode_speeds(reference)
    rows = [("float32 (unquantized)", reference, perplexities[0], None, 0.0)]
    rows += [(n, b, p, k, s) for n, b, p, k, s in zip(names, bundles, perplexities[1:], kls[1:], seconds)]
    for name, bundle, perplexity, kl, took in rows:
        fp32, bf16 = (base_fp32, base_bf16) if bundle is reference else decode_speeds(bundle)
        lines.append(
            f"| {name} | {weights_size(bundle.path) / 1e6:.1f} | {perplexity:.3f} | "
            f"{100 * (perplexity / perplexities[0] - 1):+.1f}% | {'-' if kl is None else f'{kl:.4f}'} | "
            f"{fp32:.1f} | {fp32 / base_fp32:.2f} | {_fmt(bf16)} | "
            f"{_ratio(bf16, base_bf16)} | {took:.1f} |")
        print(lines[-1], flush=True)
    return lines


def gguf_table(args, reference, text: str, workdir: Path) -> list[str]:
    from lmstack.hub.load import load_model
    from lmstack.quant import llama_cpp_peer
    from lmstack.quant.gguf_export import export_gguf
    from lmstack.quant.quality import DECODE_PROMPT, nll_and_kl, text_windows

    windows = text_windows(reference.tokenizer.encode(text), 512)
    prompt = reference.tokenizer.encode(DECODE_PROMPT)
    start = time.perf_counter()
    (f32,) = export_gguf(args.model, workdir / "f32", ["f32"])
    print(f"exported F32 in {time.perf_counter() - start:.1f} s", flush=True)
    files = [("F32 (lmstack export)", "-", f32.path, 0.0)]
    for file_type in args.gguf_types:
        path = workdir / f"llama-{file_type}.gguf"
        files.append((file_type.upper(), "llama.cpp quantizer", path, llama_cpp_peer.quantize(f32.path, path, file_type,
                                                                                               args.threads)))
        for method in args.gguf_methods:
            start = time.perf_counter()
            (export,) = export_gguf(args.model, workdir / method, [file_type], method=method, overwrite=True)
            files.append((file_type.upper(), f"lmstack --method {method}", export.path, time.perf_counter() - start))
    base = llama_cpp_peer.perplexity(f32.path, windows, args.threads)
    lines = ["| type | made by | size MB | llama.cpp perplexity | vs F32 | lmstack perplexity | KL | "
             "llama.cpp decode tok/s | quantize s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for file_type, maker, path, took in files:
        perplexity = llama_cpp_peer.perplexity(path, windows, args.threads)
        ours, kl = nll_and_kl(reference, [load_model(path, device="cpu", dtype="fp32")], text)
        speed = llama_cpp_peer.decode_speed(path, prompt, 64, args.threads)
        lines.append(f"| {file_type} | {maker} | {path.stat().st_size / 1e6:.1f} | {perplexity:.3f} | "
                     f"{100 * (perplexity / base - 1):+.1f}% | {ours[1]:.3f} | {kl[1]:.4f} | {speed:.1f} | {took:.1f} |")
        print(lines[-1], flush=True)
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if not (value and base) else f"{value / base:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", default=",".join(LMSTACK_METHODS))
    parser.add_argument("--gguf-types", default="q8_0,q4_0,q4_1,q5_0")
    parser.add_argument("--gguf-methods", default="rtn,gptq,awq")
    parser.add_argument("--text", default="lmstack:general_heldout")
    args = parser.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    args.gguf_types = [t for t in args.gguf_types.split(",") if t]
    args.gguf_methods = [m for m in args.gguf_methods.split(",") if m]
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="lmstack-quant-bench-"))
    os.environ["LMSTACK_REGISTRY"] = str(workdir / "registry.db")

    from lmstack.data import dataset_path
    from lmstack.device import describe_cpu
    from lmstack.hub.load import load_model
    from lmstack.inputs import read_text

    reference = load_model(args.model, device="cpu", dtype="fp32")
    text = read_text(dataset_path(args.text))
    # From here on models are referred to by their GGUF path, and the GGUF files made here are
    # converted in a throwaway home (removed at the end) instead of the user's.
    args.model = str(reference.source or reference.path)
    os.environ["LMSTACK_HOME"] = str(workdir / "home")
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "gguf", "llama-cpp-python")
                         if _installed(p))
    header = [f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {describe_cpu()}, {args.threads} threads; {versions}"]
    part1 = lmstack_table(args, reference, text, workdir) if args.methods else []
    part2 = gguf_table(args, reference, text, workdir) if args.gguf_types else []
    print("\n".join(["", *header, "", *part1, "", *part2]))
    shutil.rmtree(workdir, ignore_errors=True)


def _installed(package: str) -> bool:
    try:
        metadata.version(package)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
