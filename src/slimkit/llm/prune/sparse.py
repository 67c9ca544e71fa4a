"""The maths of unstructured and N:M pruning of one Linear weight ``(out, in)``: pure functions
of the weight and statistics of its inputs (no module is touched here).

- magnitude: ``|w|``, the lowest of the whole matrix (unstructured) or of each group of M.
- Wanda (Sun et al., 2023): ``|w_ij| * ||x_j||``, compared within each output row (or group of
  M), where ``||x_j||`` is the norm of input feature ``j`` over the calibration tokens.
- SparseGPT (Frantar & Alistarh, 2023): the mask is chosen column block by column block by
  ``w**2 / [H^-1]_jj**2`` and every pruned weight's error is spread over the not yet visited
  columns through the inverse Hessian ``H = 2 X^T X`` (optimal brain surgeon, one row at a
  time in parallel). Written here rather than taken from llm-compressor, whose modifiers run
  only inside its own one-shot pipeline (datasets, compressed-tensors, its own model wrappers);
  the algorithm is the reference code's, in ~40 lines.

Masks are boolean, True where a weight is removed.
"""

from __future__ import annotations

import torch

from slimkit.errors import InputError


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Remove the ``m - n`` lowest scores of every group of ``m`` consecutive columns.

    Example:
        >>> nm_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0]]), 2, 4).tolist()
        [[False, True, False, True]]
    """
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    low = groups.topk(m - n, dim=-1, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, low, True)
    return mask.reshape(rows, cols)


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the lowest ``sparsity`` share of every row."""
    k = int(scores.shape[1] * sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        mask.scatter_(1, scores.topk(k, dim=1, largest=False).indices, True)
    return mask


def matrix_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the lowest ``sparsity`` share of the whole matrix."""
    k = int(scores.numel() * sparsity)
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if k:
        mask[scores.flatten().topk(k, largest=False).indices] = True
    return mask.reshape(scores.shape)


def magnitude_mask(weight: torch.Tensor, sparsity: float,
                   nm: tuple[int, int] | None) -> torch.Tensor:
    """Magnitude pruning: the smallest ``|w|`` of the matrix, or of each group of M."""
    scores = weight.abs()
    return nm_mask(scores, *nm) if nm else matrix_mask(scores, sparsity)


def wanda_mask(weight: torch.Tensor, sq_sum: torch.Tensor, sparsity: float,
               nm: tuple[int, int] | None) -> torch.Tensor:
    """Wanda: ``|w_ij| * sqrt(sum_t x_tj**2)``, lowest per row (or per group of M).

    Example:
        >>> w = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
        >>> wanda_mask(w, torch.tensor([4.0, 1.0, 9.0, 0.0]), 0.5, None).tolist()
        [[False, True, False, True]]
    """
    scores = weight.abs() * sq_sum.to(weight.dtype).sqrt().reshape(1, -1)
    return nm_mask(scores, *nm) if nm else row_mask(scores, sparsity)


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float,
                    nm: tuple[int, int] | None, damp: float = 0.01,
                    block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT: ``(new weight, mask)``; the kept weights are updated to make up for the
    removed ones on inputs whose ``X^T X`` is ``hessian``."""
    w = weight.detach().double().clone()
    h = hessian.detach().double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(len(h), dtype=h.dtype) * damp * torch.diag(h).mean()
    hinv = _upper_inverse_cholesky(h)
    cols = w.shape[1]
    mask = torch.zeros_like(w, dtype=torch.bool)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1, hinv1 = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        diag = torch.diag(hinv1).reshape(1, -1)
        # the adaptive mask of the block: its lowest share as a whole (rows may differ)
        mask1 = matrix_mask(w1**2 / diag**2, sparsity) if nm is None \
            else torch.zeros_like(w1, dtype=torch.bool)
        errors = torch.zeros_like(w1)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                mask1[:, i:i + nm[1]] = nm_mask(w1[:, i:i + nm[1]] ** 2
                                                / diag[:, i:i + nm[1]] ** 2, *nm)
            col = w1[:, i]
            kept = torch.where(mask1[:, i], torch.zeros_like(col), col)
            err = (col - kept) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            w1[:, i] = kept
            errors[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= errors @ hinv[i1:i2, i2:]
        mask[:, i1:i2] = mask1
    w[mask] = 0.0
    return w.to(weight.dtype), mask


def _upper_inverse_cholesky(h: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor of ``h^-1`` (the reference code's ``Hinv``), dampening more
    when ``h`` is not positive definite in float64."""
    eye = torch.eye(len(h), dtype=h.dtype)
    extra = 0.0
    for _ in range(6):
        factor, info = torch.linalg.cholesky_ex(h + eye * extra)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            return torch.linalg.cholesky(inverse, upper=True)
        extra = max(extra * 10, 1e-6 * float(torch.diag(h).mean()))
    raise InputError("the calibration inputs of a layer give a Hessian that is not positive "
                     "definite even after dampening; use more calibration windows or wanda")


def check_nm(name: str, in_features: int, nm: tuple[int, int]) -> None:
    """Refuse N:M on a layer whose input dimension is not a multiple of M, naming it."""
    if in_features % nm[1]:
        raise InputError(f"layer '{name}' has {in_features} input features, not a multiple of "
                         f"{nm[1]}: {nm[0]}:{nm[1]} sparsity keeps {nm[0]} of every {nm[1]} "
                         "consecutive weights of a row; use unstructured sparsity for this model")
