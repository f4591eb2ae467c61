"""GGUF's quantized block formats as grids, and the bytes llama.cpp reads for each.

Every format stores a row in blocks; the values of a block are integers with a scale (and for
the `_1` and K formats an offset) per block or sub-block:

    Q8_0  32 values   int8 -127..127, fp16 scale                         (34 bytes)
    Q4_0  32 values   4-bit, (q - 8) * d, d = signed max / -8            (18 bytes)
    Q4_1  32 values   4-bit, q * d + m, fp16 d and m                     (20 bytes)
    Q5_0  32 values   5-bit, (q - 16) * d                                (22 bytes)
    Q5_1  32 values   5-bit, q * d + m                                   (24 bytes)
    Q4_K  256 values  8 sub-blocks of 32: q * d·s_j - dmin·m_j, 6-bit s_j and m_j  (144 bytes)
    Q5_K  256 values  as Q4_K with 5-bit q                               (176 bytes)
    Q6_K  256 values  16 sub-blocks of 16: (q - 32) * d·s_j, int8 s_j   (210 bytes)

K formats quantize their sub-block scales too, against one fp16 scale per 256 values ("super
block"): `grids.second_level` does that. Which integers fill the blocks is the method's choice
(round-to-nearest, GPTQ, AWQ); `pack` only lays them out, so the same bytes come out for the
same choices. With round-to-nearest the legacy formats equal llama.cpp's reference quantizer.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType as T

from lmstack.quant.grids import Grid, QuantizedWeight, nonzero_or_one

FP16 = torch.float16
GGUF_GRIDS: dict[T, Grid] = {
    T.Q8_0: Grid(-127, 127, symmetric=True, group_size=32, scale_dtype=FP16, half_away=True),
    T.Q4_0: Grid(-8, 7, symmetric=True, group_size=32, scale_dtype=FP16, signed_max=True, half_away=False),
    T.Q5_0: Grid(-16, 15, symmetric=True, group_size=32, scale_dtype=FP16, signed_max=True, half_away=False),
    T.Q4_1: Grid(0, 15, symmetric=False, group_size=32, scale_dtype=FP16, half_away=False),
    T.Q5_1: Grid(0, 31, symmetric=False, group_size=32, scale_dtype=FP16, half_away=False),
    # K formats: the sub-block grids; their scales are then quantized per super block
    T.Q4_K: Grid(0, 15, symmetric=False, group_size=32, half_away=False, super_block=256, scale_bits=6),
    T.Q5_K: Grid(0, 31, symmetric=False, group_size=32, half_away=False, super_block=256, scale_bits=6),
    T.Q6_K: Grid(-32, 31, symmetric=True, group_size=16, signed_max=True, half_away=False, super_block=256,
                 scale_bits=8),
}
BLOCK_SIZES = {qtype: grid.super_block or grid.group_size for qtype, grid in GGUF_GRIDS.items()}


# --- byte layout ---------------------------------------------------------------------------------


def _fp16_bytes(values: torch.Tensor) -> np.ndarray:
    """[rows, blocks] float values as [rows, blocks, 2] little-endian fp16 bytes."""
    return values.to(FP16).numpy().view(np.uint8).reshape(*values.shape, 2)


def _nibbles(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return (low & 0x0F) | (high.astype(np.uint8) << 4)


def pack(qtype: T, quantized: QuantizedWeight) -> np.ndarray:
    """The GGUF bytes [rows, row bytes] of integers chosen on `GGUF_GRIDS[qtype]`."""
    grid = GGUF_GRIDS[qtype]
    q, scale, offset = quantized
    rows, k = q.shape
    codes = (q.long() - grid.qmin).numpy().astype(np.uint8)  # 0 .. levels - 1
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        return _pack_k(qtype, grid, codes, scale, offset)
    blocks = codes.reshape(rows, k // 32, 32)
    d = _fp16_bytes(scale)
    if qtype == T.Q8_0:
        parts = [d, (q.long().numpy().astype(np.int8).view(np.uint8)).reshape(rows, k // 32, 32)]
    else:
        parts = [d]
        if not grid.symmetric:
            parts.append(_fp16_bytes(offset))
        if grid.levels == 32:  # the fifth bits, 32 per block, as one little-endian uint32
            parts.append(np.packbits(blocks >> 4, axis=-1, bitorder="little"))
        parts.append(_nibbles(blocks[..., :16], blocks[..., 16:] & 0x0F))
    return np.concatenate(parts, axis=-1).reshape(rows, -1)


def _pack_k(qtype: T, grid: Grid, codes: np.ndarray, scale: torch.Tensor, offset: torch.Tensor) -> np.ndarray:
    rows, k = codes.shape
    supers = k // 256
    per_super = 256 // grid.group_size
    s = scale.view(rows, supers, per_super)
    if qtype == T.Q6_K:
        index = s.abs().argmax(dim=-1, keepdim=True)
        d = (torch.gather(s, -1, index) / -128).to(FP16)
        ints = torch.round(s / nonzero_or_one(d.float())).clamp(-128, 127).to(torch.int8).numpy().view(np.uint8)
        c = codes.reshape(rows, supers, 2, 4, 32)  # two halves of 128, four quarters of 32
        low = c & 0x0F
        ql = np.concatenate([_nibbles(low[:, :, :, 0], low[:, :, :, 2]), _nibbles(low[:, :, :, 1], low[:, :, :, 3])],
                            axis=-1)  # [rows, supers, 2, 64]
        high = (c >> 4) & 0x03
        qh = high[:, :, :, 0] | (high[:, :, :, 1] << 2) | (high[:, :, :, 2] << 4) | (high[:, :, :, 3] << 6)
        parts = [ql.reshape(rows, supers, 128), qh.reshape(rows, supers, 64), ints.reshape(rows, supers, 16),
                 d.numpy().view(np.uint8).reshape(rows, supers, 2)]
        return np.concatenate(parts, axis=-1).reshape(rows, -1)
    top = 2**grid.scale_bits - 1
    m = (-offset).clamp_min(0).view(rows, supers, per_super)
    d = (s.amax(dim=-1, keepdim=True) / top).to(FP16)
    dmin = (m.amax(dim=-1, keepdim=True) / top).to(FP16)
    sc = torch.round(s / nonzero_or_one(d.float())).clamp(0, top).to(torch.uint8).numpy()
    mn = torch.round(m / nonzero_or_one(dmin.float())).clamp(0, top).to(torch.uint8).numpy()
    packed_scales = np.concatenate([
        (sc[..., :4] & 63) | ((sc[..., 4:] >> 4) << 6),
        (mn[..., :4] & 63) | ((mn[..., 4:] >> 4) << 6),
        (sc[..., 4:] & 0x0F) | ((mn[..., 4:] & 0x0F) << 4),
    ], axis=-1)  # [rows, supers, 12]: the 6-bit scales and mins of 8 sub-blocks
    c = codes.reshape(rows, supers, 4, 2, 32)  # four pairs of sub-blocks, 32 values each
    qs = _nibbles(c[:, :, :, 0], c[:, :, :, 1] & 0x0F).reshape(rows, supers, 128)
    parts = [d.numpy().view(np.uint8).reshape(rows, supers, 2), dmin.numpy().view(np.uint8).reshape(rows, supers, 2),
             packed_scales]
    if qtype == T.Q5_K:  # fifth bits: bit 2i of byte l for sub-block 2i's value l, bit 2i+1 for 2i+1
        fifth = (c >> 4) & 1  # [rows, supers, 4, 2, 32]
        bits = fifth.reshape(rows, supers, 8, 32)
        qh = np.zeros((rows, supers, 32), dtype=np.uint8)
        for sub in range(8):
            qh |= bits[:, :, sub] << sub
        parts.append(qh)
    parts.append(qs)
    return np.concatenate(parts, axis=-1).reshape(rows, -1)
