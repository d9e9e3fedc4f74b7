"""Row-wise sequence work on length buckets, so short histories do not pay for 50 positions of padding.

Live histories are short (on the `default` preset: median 3 of L = 50 events, 90% at most 13), yet the live
self-attention (eq. 12) and the cross-attention whose queries are live events (eq. 16-17) cost in proportion
to L. Every row of those blocks is computed on its own (keys and values come from the same row), so rows can
be grouped by how many positions they actually span and each group run on only that many trailing positions
(histories are left-padded). The outputs are the same as at full length, up to float rounding: padded
positions are masked out of every attention and zeroed on the way out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BUCKETS = (4, 8, 16, 32)
"""Upper bounds of the span groups; a last group takes the rest. Few groups: each costs a set of kernel calls."""


@dataclass(frozen=True)
class LengthGroups:
    """Rows of a batch sorted into groups by span; group i is ``sizes[i]`` consecutive rows of ``perm`` whose
    last ``keep[i]`` positions hold every real event."""

    length: int
    perm: Tensor
    sizes: tuple[int, ...]
    keep: tuple[int, ...]

    @classmethod
    def of(cls, mask: Tensor, bounds: Sequence[int] = BUCKETS) -> LengthGroups:
        """Group rows of ``mask`` [B, L] (True = real event) by span: L minus the first real position.

        With left padding the span is the history's length; with any other mask it is still long enough to keep
        every real event, so the result never depends on how the mask looks. Empty rows go to the first group.
        """
        length = mask.shape[1]
        first = mask.to(torch.uint8).argmax(1)
        span = torch.where(mask.any(1), length - first, torch.zeros_like(first))
        rows, sizes, keep = [], [], []
        lower = -1
        for upper in [*(b for b in sorted(bounds) if b < length), length]:
            group = ((span > lower) & (span <= upper)).nonzero().squeeze(1)
            if group.numel():
                rows.append(group)
                sizes.append(group.numel())
                keep.append(max(1, int(span[group].max())))
            lower = upper
        perm = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long, device=mask.device)
        return cls(length, perm, tuple(sizes), tuple(keep))

    def apply(
        self,
        fn: Callable[..., Tensor],
        sequences: Sequence[Tensor],
        rows: Sequence[Tensor] = (),
        sequence_output: bool = True,
    ) -> Tensor:
        """``fn(*trimmed sequences, *row tensors)`` per group, results put back in batch order.

        ``sequences`` are [B, L, ...] (trimmed to each group's trailing positions), ``rows`` are [B, ...] (only
        regrouped). With ``sequence_output`` fn returns [b, keep, D], left-padded back to [B, L, D] with zeros;
        otherwise it returns one row [b, D] per sample.
        """
        if len(self.sizes) == 1 and self.keep[0] == self.length:  # nothing to trim
            return fn(*sequences, *rows)
        # One gather per input, then contiguous splits: their backward is a concatenation, not a zero-filled
        # full-size gradient per group.
        inverse = torch.argsort(self.perm)
        split_sequences = [permute_rows(s, self.perm, inverse).split(self.sizes) for s in sequences]
        split_rows = [permute_rows(r, self.perm, inverse).split(self.sizes) for r in rows]
        outputs = []
        for i, keep in enumerate(self.keep):
            out = fn(*(s[i][:, self.length - keep :] for s in split_sequences), *(r[i] for r in split_rows))
            if sequence_output and keep < self.length:
                out = F.pad(out, (0, 0, self.length - keep, 0))
            outputs.append(out)
        return permute_rows(torch.cat(outputs), inverse, self.perm)


class _PermuteRows(torch.autograd.Function):
    """x[perm] for a permutation: its gradient is grad[inverse], another row gather. Advanced indexing would
    scatter-add the gradient into a zero tensor instead (index_put with accumulate), which on a CPU took
    20-30 ms per [1024, 50, D] tensor in a training step (about 6% of FARM's step)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, perm: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def on_rows(fn: Callable[..., Tensor], keep: Tensor, *inputs: Tensor) -> Tensor:
    """``fn(*inputs)`` computed for the batch rows where ``keep`` [B] is True only, zeros for the others.

    For work whose output some rows never use: FARM's video preference (eq. 12) of a row without a live event
    (model/farm.py). One gather per input, one back; every row kept: just ``fn(*inputs)``.
    """
    kept = int(keep.sum())
    if kept == keep.numel():
        return fn(*inputs)
    perm = torch.argsort(~keep, stable=True)  # kept rows first, each part in batch order
    inverse = torch.argsort(perm)
    selected = fn(*(permute_rows(x, perm, inverse)[:kept] for x in inputs))
    padded = torch.cat([selected, selected.new_zeros((keep.numel() - kept, *selected.shape[1:]))])
    return permute_rows(padded, inverse, perm)


def permute_rows(x: Tensor, perm: Tensor, inverse: Tensor) -> Tensor:
    """``x[perm]`` along the first axis, where ``perm`` is a permutation and ``inverse`` its inverse."""
    if not x.requires_grad:
        return x.index_select(0, perm)
    return _PermuteRows.apply(x, perm, inverse)
