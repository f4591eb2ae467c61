"""GPTQ (Frantar et al., 2022): round one input column at a time and let the columns not yet
rounded absorb the error, weighted by how the layer's inputs co-vary.

For a linear layer y = W x, the loss of rounding W to Ŵ on calibration inputs X is
||W X - Ŵ X||² = tr((W - Ŵ) H (W - Ŵ)^T) with H = X X^T. Quantizing column k with error e, the
optimal change of the remaining columns is -e · H⁻¹[k, k:] / H⁻¹[k, k] (Optimal Brain Surgeon).
GPTQ does this for every row at once, in a fixed column order, with H⁻¹ taken from a Cholesky
factor (numerically stable) and updates applied lazily in blocks of columns (fast).

- damping: H + λ·mean(diag H)·I keeps H invertible when some inputs barely vary.
- act-order: quantize the columns with the largest H[k, k] (most-used inputs) first, while many
  columns remain to absorb their error. Group scales are then fixed up front from the original
  weights (their groups are no longer visited in order).
- group size: a scale/offset per group of consecutive inputs; fitted when the group's first
  column is reached, on the weights as they are updated by then.
"""

from __future__ import annotations

import torch

from lmstack.errors import LmstackError
from lmstack.quant.grids import Grid, QuantizedWeight, fit, fit_groups, round_codes, second_level


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, grid: Grid, *, damp: float = 0.01,
                  act_order: bool = True, search: int = 0, block_size: int = 128) -> QuantizedWeight:
    """`weight` [N, K] rounded onto `grid` by GPTQ, given the sum of its inputs' outer products.

    `search` > 0 chooses each static group's range among that many clipped candidates, by rounding
    error weighted with H's diagonal (each input's mean square).
    """
    n, k = weight.shape
    if grid.group_size == 0:
        raise LmstackError("GPTQ quantizes per row or per group, not with one scale for the whole tensor")
    size = grid.group_size or k
    if k % size:
        raise LmstackError(f"group size {size} does not divide the layer's {k} inputs; choose a divisor of {k}")
    W = weight.detach().float().clone()
    H = hessian.detach().float().clone()
    dead = H.diagonal() == 0  # inputs that never fired: any value works, zero is cheapest
    H[dead, dead] = 1
    W[:, dead] = 0

    groups = k // size
    scale = torch.zeros(n, groups, device=W.device)
    offset = torch.zeros(n, groups, device=W.device)
    order = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(k, device=W.device)
    # Static groups, fitted on the original weights before any column moves: with act-order (the
    # groups are not visited in order) and for GGUF's K formats (a super block's groups share a scale).
    static = act_order or bool(grid.super_block)
    if static:
        scale, offset = second_level(grid, *fit_groups(grid, W.view(n, groups, size), H.diagonal(), search))
    W, H = W[:, order], H[order][:, order]
    H.diagonal().add_(damp * H.diagonal().mean())
    Hinv = _inverse_cholesky(H)

    Q = torch.zeros(n, k, device=W.device)
    for start in range(0, k, block_size):
        end = min(start + block_size, k)
        W1, E1 = W[:, start:end].clone(), torch.zeros(n, end - start, device=W.device)
        for i in range(end - start):
            column = int(order[start + i])
            group = column // size
            if not static and column % size == 0:
                s, o = fit(grid, W1[:, i : i + size] if i + size <= end - start else
                           torch.cat([W1[:, i:], W[:, end : start + i + size]], dim=1))
                s, o = second_level(grid, s[:, None], o[:, None])
                scale[:, group], offset[:, group] = s[:, 0], o[:, 0]
            w = W1[:, i]
            q = round_codes(grid, w.unsqueeze(-1), scale[:, group], offset[:, group]).squeeze(-1)
            Q[:, start + i] = q
            error = (w - (q * scale[:, group] + offset[:, group])) / Hinv[start + i, start + i]
            W1[:, i:] -= error.unsqueeze(1) * Hinv[start + i, start + i : end].unsqueeze(0)
            E1[:, i] = error
        W[:, end:] -= E1 @ Hinv[start:end, end:]

    codes = torch.empty_like(Q)
    codes[:, order] = Q
    return QuantizedWeight(codes.to(torch.int16), scale, offset)


def _inverse_cholesky(H: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor of H⁻¹: row i holds the OBS update for column i onward."""
    for attempt in range(5):
        try:
            L = torch.linalg.cholesky(H)
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
        except torch.linalg.LinAlgError:  # not positive definite: damp more and retry
            H = H.clone()
            H.diagonal().add_(0.1 * H.diagonal().mean() * 2**attempt)
    raise LmstackError("GPTQ could not invert a layer's Hessian even with heavy damping; raise --damp")
