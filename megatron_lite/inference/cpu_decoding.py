"""A speed trick for decoding on the CPU, applied only while generating.

Decoding computes one new token per sequence: every linear layer multiplies a few rows
(``[b, 1, in]``, b <= 16) by a large weight. On the CPU, MKL's kernel for ``x @ weight^T`` with a
few rows is 2-3x slower than the same product computed as ``(weight @ x^T)^T``, and its
matrix-vector kernel (one row) is slower than a two-column product of the row with itself.
Measured on this project's 2-core EPYC: the 512 x 50304 LM head takes 9.6 ms for 1 row and 17 ms
for 8 with ``F.linear``, 2.6 ms and 6.4 ms this way (figures: docs/performance.md, generation).

The model's layers compute ``parallel.layers.linear``, which is ``F.linear`` unless a caller swaps
in another product for a block; ``few_row_products(device)`` does so while generation runs, so
training, evaluation and the GPU never see it. The result equals ``F.linear`` up to float
rounding. (Intercepting ``F.linear`` with a ``TorchFunctionMode`` instead costs every torch call
of the step a Python dispatch, 379 of them per Pythia-70M decoding step: batch-1 decoding ran
about 15% slower that way, so the layers offer the swap explicitly.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from megatron_lite.parallel.layers import linear_product

FEW_ROWS = 16  # products with at most this many rows take the transposed form


def decoding_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: x [*, in], weight [out, in] -> [*, out]; computed as
    ``weight @ x^T`` for at most ``FEW_ROWS`` rows on the CPU without autograd."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if x.device.type != "cpu" or torch.is_grad_enabled() or not 1 <= rows <= FEW_ROWS:
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])  # [rows, in]
    if rows == 1:
        y = (weight @ torch.cat((flat, flat)).t())[:, :1].t()  # [1, out]
    else:
        y = (weight @ flat.t()).t()  # [rows, out]
    y = y.reshape(*x.shape[:-1], weight.shape[0])
    return y + bias if bias is not None else y


@contextlib.contextmanager
def few_row_products(device: torch.device) -> Iterator[None]:
    """Within the block, few-row linear products on the CPU take the faster form (no-op elsewhere)."""
    if device.type != "cpu":
        yield
        return
    with linear_product(decoding_linear):
        yield
