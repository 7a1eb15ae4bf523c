"""Weighted sums of feature-table rows, the inner loop of every grid encoding (hash grid, tri-plane).

A grid encoding looks up a few table rows per point (the corners of the cell it falls in) and
blends them with interpolation weights. ``interpolate_rows`` does both in one pass with a
hand-written backward, so that training on a CPU does not pay for materialising the corner rows
or for a fresh table-sized gradient every step.
"""
from __future__ import annotations

import torch


class _InterpolateRows(torch.autograd.Function):
    """out = sum_c w[..., c] * table[index[..., c]] with a hand-written backward.

    The forward is ``embedding_bag`` (one fused gather-and-weigh pass: the (M, C, F) corner rows
    are never materialised). The table gradient is a scatter-add over the touched rows. With
    ``in_place`` it is added straight into ``table.grad`` and None is returned to autograd: a fresh
    multi-million-entry gradient per step costs more in page faults than the whole scatter on CPU,
    so the buffer is kept and zeroed in place (``optimizer.zero_grad(set_to_none=False)``).
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, in_place: bool) -> torch.Tensor:
        corners = index.shape[-1]
        flat_index = index.reshape(-1, corners)
        flat_weights = weights.reshape(-1, corners).to(table.dtype)
        out = torch.nn.functional.embedding_bag(flat_index, table, per_sample_weights=flat_weights, mode="sum")
        ctx.in_place = in_place
        ctx.save_for_backward(table, index, weights)
        return out.view(index.shape[:-1] + (table.shape[1],))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        table, index, weights = ctx.saved_tensors
        features = table.shape[1]
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            contributions = (weights[..., None] * grad_out[..., None, :]).reshape(-1, features)
            if ctx.in_place:
                if table.grad is None:
                    table.grad = torch.zeros_like(table)
                target = table.grad
            else:
                target = grad_table = torch.zeros_like(table)
            scatter_rows(target, index.reshape(-1), contributions)
        if ctx.needs_input_grad[2]:
            rows = table.index_select(0, index.reshape(-1)).view(index.shape + (features,))
            grad_weights = (rows * grad_out[..., None, :]).sum(-1)
        return grad_table, None, grad_weights, None


def scatter_rows(target: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """target[index[i]] += rows[i], in place. target: (E, F); index: (M,); rows: (M, F).

    Narrow rows go through one flat scatter over (entry, feature) pairs, wide rows through
    index_add_: whichever PyTorch's CPU kernels do faster for that width.
    """
    features = target.shape[1]
    if features >= 4:
        target.index_add_(0, index, rows)
    else:
        flat_index = (index[:, None] * features + torch.arange(features, device=index.device)).reshape(-1)
        target.view(-1).scatter_add_(0, flat_index, rows.reshape(-1))


def interpolate_rows(table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """Weighted sum of table rows. table: (E, F); index: (..., C) int64; weights: (..., C).

    Returns (..., F). Differentiable in ``table`` and ``weights``. in_place: accumulate the
    table's gradient directly into ``table.grad`` (fast training path; autograd then sees no
    gradient for the table, so ``torch.autograd.grad`` w.r.t. it needs in_place=False).
    """
    return _InterpolateRows.apply(table, index, weights, in_place)
