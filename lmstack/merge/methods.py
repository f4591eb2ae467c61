"""The merge methods: what happens to one tensor, given the same tensor from every input model.

Every method here is a function of float32 tensors; `COMBINE` calls them by name. Which
parameters each takes, their defaults and ranges, are in `lmstack.merge.config.METHODS`, checked
when the config is read.

    linear            sum_i w_i x_i (/ sum_i w_i)                       Model Soups
    slerp             spherical interpolation from the base to the other model by t
    task_arithmetic   base + lambda * sum_i w_i (x_i - base)             task vectors
    ties              keep each delta's top-density magnitudes, elect a sign per entry,
                      average the deltas that agree with it              TIES-Merging
    dare_linear       drop each delta entry with probability 1 - density, rescale by 1 / density
    dare_ties         DARE's random drop, then TIES' sign election
    model_stock       interpolate the base towards the average by the angle between deltas
    passthrough       one input, optionally scaled (layer stacking / frankenmerges)
"""

from __future__ import annotations

import math
from typing import Callable

import torch

# --- the methods -----------------------------------------------------------------------------


def linear(tensors: list[torch.Tensor], weights: list[float], normalize: bool = True) -> torch.Tensor:
    out = torch.zeros_like(tensors[0])
    for tensor, weight in zip(tensors, weights):
        out.add_(tensor, alpha=weight)
    total = sum(weights)
    if normalize and total != 0:
        out.div_(total)
    return out


def slerp(base: torch.Tensor, other: torch.Tensor, t: float, dot_threshold: float = 0.9995,
          eps: float = 1e-8) -> torch.Tensor:
    """Interpolate along the great circle between the two tensors seen as directions (t=0: base).

    The angle comes from the normalised, flattened tensors; nearly parallel tensors (|cos| above
    `dot_threshold`) fall back to linear interpolation, where the sphere is flat anyway.
    """
    norms = [float(x.norm()) for x in (base, other)]
    norm_base, norm_other = (n if n > eps else 1.0 for n in norms)
    cos = max(-1.0, min(1.0, float(base.flatten() @ other.flatten()) / (norm_base * norm_other)))
    if abs(cos) > dot_threshold:
        return torch.lerp(base, other, t)
    theta = math.acos(cos)
    base_weight = math.sin((1 - t) * theta) / math.sin(theta)
    other_weight = math.sin(t * theta) / math.sin(theta)
    return base * base_weight + other * other_weight


def task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float], *,
                    densities: list[float] | None = None, sparsify: str | None = None, consensus: bool = False,
                    normalize: bool = False, lambda_: float = 1.0, rescale: bool = False,
                    generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """Task arithmetic and its refinements (TIES, DARE): combine the deltas from the base.

    `sparsify`: None, "magnitude" (keep the top `density` fraction by |delta|, TIES) or "random"
    (keep each entry with probability `density`, DARE). `consensus`: keep only the entries whose
    sign agrees with the sign of the weighted sum (TIES' sign election). `normalize` divides by
    the sum of the weights that contributed at each entry.
    """
    deltas = []
    for index, tensor in enumerate(tensors):
        delta = tensor.sub_(base)  # the inputs are fresh float32 copies: reuse their memory
        if sparsify is not None and densities[index] < 1:
            generator = generators[index] if generators else None
            delta = _sparsify(delta, densities[index], sparsify, rescale, generator)
        deltas.append(delta.mul_(weights[index]))
    if consensus:  # TIES: per entry, keep the deltas whose sign is the sign of their sum
        elected = deltas[0].clone()
        for delta in deltas[1:]:
            elected.add_(delta)
        elected = torch.where(elected >= 0, 1.0, -1.0)  # the sign of the sum (a tie elects +)
        divisor = torch.zeros_like(base)
        for delta, weight in zip(deltas, weights):
            agrees = delta.mul(elected) > 0  # a zero delta agrees with nothing
            delta.mul_(agrees)
            divisor.add_(agrees, alpha=weight)
        divisor[divisor == 0] = 1
    else:
        total = sum(weights)
        divisor = base.new_tensor(1.0 if abs(total) < 1e-8 else total)
    mixed = deltas[0]
    for delta in deltas[1:]:
        mixed.add_(delta)
    if normalize:
        mixed.div_(divisor)
    if lambda_ != 1:
        mixed.mul_(lambda_)
    return mixed.add_(base)


def model_stock(base: torch.Tensor, tensors: list[torch.Tensor], filter_wise: bool = False) -> torch.Tensor:
    """Model Stock: move the base towards the average of the fine-tunes by t = k cos / (1 + (k-1) cos),
    where cos is the mean cosine between their deltas (per tensor, or per row with `filter_wise`)."""
    shape = base.shape
    rows = (lambda x: x.reshape(1, -1) if x.dim() < 2 else x) if filter_wise else (lambda x: x.reshape(1, -1))
    base_rows = rows(base)
    deltas = [rows(tensor) - base_rows for tensor in tensors]
    cosines = []
    for i, first in enumerate(deltas):
        for second in deltas[i + 1:]:
            norms = (first.norm(dim=-1) * second.norm(dim=-1)).clamp_min(1e-6)
            cosines.append(((first * second).sum(dim=-1) / norms).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    k = len(tensors)
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < 1e-6  # opposing updates: no finite estimate, keep the base
    t = torch.where(singular, 0.0, k * cos / torch.where(singular, 1.0, denominator))
    average = sum(rows(tensor) for tensor in tensors) / k
    return (t * average + (1 - t) * base_rows).reshape(shape)


def passthrough(tensor: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    return tensor if scale is None else tensor * scale


# --- sparsification ------------------------------------------------------------------------


def _sparsify(delta: torch.Tensor, density: float, how: str, rescale: bool,
              generator: torch.Generator | None) -> torch.Tensor:
    if density <= 0:
        return delta.zero_()
    if how == "random":
        delta.mul_(torch.rand(delta.shape, generator=generator, device=delta.device) < density)
    else:
        k = max(1, int(density * delta.numel()))
        # With no more than k non-zero entries, they all are among the k largest: nothing to drop.
        # (Fine-tunes often leave whole tensors, e.g. LoRA's untouched embeddings, unchanged.)
        if int(delta.count_nonzero()) > k:
            delta.mul_(top_magnitude_mask(delta, k))
    return delta.div_(density) if rescale else delta


def top_magnitude_mask(x: torch.Tensor, k: int, chunk: int = 1 << 22) -> torch.Tensor:
    """A boolean mask of exactly the `k` entries of largest |x| (ties at the cut: lowest index first).

    A radix select instead of a sort: the bit patterns of non-negative float32 numbers order like
    the numbers, so a histogram of the top 16 bits of |x| finds the bucket holding the k-th
    largest, and a histogram of the low 16 bits inside that bucket finds the k-th largest itself.
    Two passes, no sort; on a 28M-entry embedding about 10x faster than sorting, and in chunks, so
    the mask is the only full-size temporary. (Fine-tunes often leave whole tensors unchanged:
    their deltas are all zero, one bucket holds everything, and a sort-based search would copy it.)
    """
    parts = x.reshape(-1).split(chunk)
    if k >= x.numel():
        return torch.ones_like(x, dtype=torch.bool)
    high_counts = sum(torch.bincount(_magnitude_bits(p) >> 16, minlength=1 << 15) for p in parts)
    high, above = _bucket_of_kth(high_counts, k)
    low_counts = sum(torch.bincount(bits[(bits >> 16) == high] & 0xFFFF, minlength=1 << 16)
                     for bits in map(_magnitude_bits, parts))
    low, above_in_bucket = _bucket_of_kth(low_counts, k - above)
    threshold = (high << 16) | low  # the bit pattern of the k-th largest magnitude
    missing = k - above - above_in_bucket  # how many entries equal to the k-th largest to keep, first ones first
    masks = []
    for part in parts:
        bits = _magnitude_bits(part)
        keep, ties = bits > threshold, bits == threshold
        count = int(ties.count_nonzero())
        taken = min(missing, count)
        if taken == count:
            keep |= ties
        elif taken:
            keep[ties.nonzero().flatten()[:taken]] = True
        missing -= taken
        masks.append(keep)
    return torch.cat(masks).view(x.shape)


def _magnitude_bits(part: torch.Tensor) -> torch.Tensor:
    """|part| as the int32 bit patterns of float32 numbers (the sign bit cleared)."""
    return part.to(torch.float32).view(torch.int32) & 0x7FFFFFFF


def _bucket_of_kth(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket holding the k-th largest entry, and how many entries lie in higher buckets."""
    from_top = counts.flip(0).cumsum(0)
    rank = int((from_top >= k).nonzero()[0])
    bucket = counts.numel() - 1 - rank
    return bucket, int(from_top[rank] - counts[bucket])


# --- the methods by name, as the planner calls them ------------------------------------------
# (base, inputs, each input's parameters, shared parameters, DARE's generators) -> tensor


def _linear(base, tensors, inputs, shared, generators):
    return linear(tensors, [p["weight"] for p in inputs], shared["normalize"])


def _slerp(base, tensors, inputs, shared, generators):
    return slerp(base, tensors[0], shared["t"])


def _task_family(sparsify: str | None, consensus: bool):
    def combine(base, tensors, inputs, shared, generators):
        return task_arithmetic(
            base, tensors, [p["weight"] for p in inputs], densities=[p["density"] for p in inputs],
            sparsify=sparsify, consensus=consensus, normalize=shared["normalize"], lambda_=shared["lambda"],
            rescale=shared["rescale"], generators=generators,
        )

    return combine


def _model_stock(base, tensors, inputs, shared, generators):
    return model_stock(base, tensors, shared["filter_wise"])


def _passthrough(base, tensors, inputs, shared, generators):
    return passthrough(tensors[0], inputs[0]["scale"])


COMBINE: dict[str, Callable[..., torch.Tensor]] = {
    "linear": _linear,
    "slerp": _slerp,
    "task_arithmetic": _task_family(None, consensus=False),
    "ties": _task_family("magnitude", consensus=True),
    "dare_linear": _task_family("random", consensus=False),
    "dare_ties": _task_family("random", consensus=True),
    "model_stock": _model_stock,
    "passthrough": _passthrough,
}
