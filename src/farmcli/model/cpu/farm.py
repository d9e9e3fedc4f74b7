"""FARM's forward pass on the CPU backend: the reference's eq. 8-18 on the live history's length groups.

The batch is put in live-span order, so every length group (ragged.py) is a slice, and eq. 12-17 skip the rows
without a live event where align and fuse read nothing of them. Built-in components run through this folder's
faster forms; any other (a plugin) is called as the reference calls it, on padded tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from farmcli.model.align import InfoNCEAlign, NoAlign
from farmcli.model.cpu import attention, embed, heads
from farmcli.model.cpu.frequency import frequency, runs_on_trailing
from farmcli.model.cpu.options import current
from farmcli.model.cpu.ragged import BUCKETS, LengthGroups, Trimmed, permute_rows, span_order, take_rows
from farmcli.model.farm import FARM, FarmOutput, head_input
from farmcli.model.fuse import CrossAttentionFuse, NoFuse
from farmcli.model.heads.ple import PLE
from farmcli.model.layers import scale_grad

LIVE_ROWS_ONLY = (InfoNCEAlign, NoAlign, CrossAttentionFuse, NoFuse)
"""Align and fuse components that read nothing of a row without a live event (InfoNCE leaves it out of L_cl and
of everyone's negatives; the cross-attention has no query for it, so its F^_cross is zero)."""


def forward(farm: FARM, batch: Mapping[str, Tensor], with_cl: bool = True) -> FarmOutput:
    """``farm(batch, with_cl=with_cl)`` without aux, in fp32 (autocast off here: the reference is the bf16 path)."""
    with torch.autocast(batch["v_mask"].device.type, enabled=False):
        return _forward(farm, batch, with_cl)


def _forward(farm: FARM, batch: Mapping[str, Tensor], with_cl: bool) -> FarmOutput:
    opts = current()
    cross_domain = farm.preference is not None or not (
        isinstance(farm.align, NoAlign) and isinstance(farm.fuse, NoFuse)
    )
    # rows sorted by live length once, on the ids: each group is then a slice of the batch, not a gather of
    # [B, L, D] activations; without eq. 12-17 (the base model) regrouping the few [B, D] rows of eq. 11 is cheaper
    order = span_order(batch["l_mask"]) if opts.buckets and opts.sort_rows and cross_domain else None
    if order is not None:
        batch = take_rows(batch, order)
    video_mask, live_mask = batch["v_mask"].bool(), batch["l_mask"].bool()
    groups = LengthGroups.of(live_mask, BUCKETS) if opts.buckets else None
    trimmed = groups if opts.trim_live and runs_on_trailing(farm.live_frequency) else None

    # (8) embedding layer; with length groups, V_live only at each group's trailing positions
    v_video = embed.history(farm.embed, batch, "v")
    v_live = (
        embed.history(farm.embed, batch, "l")
        if trimmed is None
        else embed.trimmed_history(farm.embed, batch, "l", trimmed)
    )
    x_cand = embed.candidate(farm.embed, batch)

    # (9-10) intra-domain frequency-aware module
    f_video = _frequency(farm.video_frequency, v_video, video_mask)
    if trimmed is None:
        f_live: Tensor | Trimmed = _frequency(farm.live_frequency, _padded(v_live), live_mask)
    else:
        length = live_mask.shape[1]
        f_live = trimmed.apply(
            lambda v, mask: frequency(farm.live_frequency, v, mask, length),
            sequences=(v_live, live_mask),
            output="trimmed",
        )

    # (11) target attention of the candidate over each domain's history
    f_hat_video = attention.target(farm.video_target, x_cand, f_video, video_mask)
    f_hat_live = attention.target(farm.live_target, x_cand, f_live, live_mask, groups)

    # (12-17) cross-domain preference: encoder, align (L_cl) and fuse (F^_cross); the base model has none
    f_hat_cross, cl_loss = None, None
    if cross_domain:
        f_hat_cross, cl_loss = _cross_domain(farm, batch, v_video, v_live, x_cand, groups, order is not None, with_cl)

    # (18) + (6) multi-task head
    features = head_input(f_hat_video, f_hat_live, f_hat_cross, x_cand)
    logits = heads.ple(farm.head, features) if opts.stacked_head and isinstance(farm.head, PLE) else farm.head(features)
    if order is not None:  # back to the batch's order
        logits = permute_rows(logits, torch.argsort(order), order)
    return FarmOutput(logits, cl_loss)


def _padded(x: Tensor | Trimmed) -> Tensor:
    return x.padded() if isinstance(x, Trimmed) else x


def _frequency(m: Any, v: Tensor, mask: Tensor) -> Tensor:
    return frequency(m, v, mask) if runs_on_trailing(m) else m(v, mask)[0]


def _cross_domain(
    farm: FARM,
    batch: Mapping[str, Tensor],
    v_video: Tensor,
    v_live: Tensor | Trimmed,
    x_cand: Tensor,
    groups: LengthGroups | None,
    sorted_rows: bool,
    with_cl: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Eq. 12-17 -> F^_cross (None without a fuse), L_cl (None without an align or ``with_cl``); in a span-sorted
    batch, on the rows with a live event only where align and fuse allow it (on ``default`` a fifth have none)."""
    live_rows_only = current().live_rows_only and all(isinstance(c, LIVE_ROWS_ONLY) for c in (farm.align, farm.fuse))
    skipped = int((~batch["l_mask"].bool().any(1)).sum()) if sorted_rows and live_rows_only else 0
    start = skipped if skipped < batch["l_mask"].shape[0] else 0  # no live event at all: every row
    rows = slice(start, None)
    video_mask, live_mask = batch["v_mask"][rows].bool(), batch["l_mask"][rows].bool()
    groups = None if groups is None else groups.rows_from(start)
    v_live = v_live.rows_from(start) if isinstance(v_live, Trimmed) else v_live[rows]

    # (12) preference encoder
    scale = farm.cfg.preference_grad
    v_hat_video, v_hat_live = v_video[rows], v_live
    if farm.preference is not None:
        v_hat_video = attention.self_attention(farm.preference.video, scale_grad(v_video[rows], scale), video_mask)
        live_encoder = farm.preference.live
        if groups is None:
            v_hat_live = attention.self_attention(live_encoder, scale_grad(_padded(v_live), scale), live_mask)
        else:
            scaled = (
                v_live.map(lambda x: scale_grad(x, scale)) if isinstance(v_live, Trimmed) else scale_grad(v_live, scale)
            )
            v_hat_live = groups.apply(
                lambda x, mask: attention.self_attention(live_encoder, x, mask), sequences=(scaled, live_mask)
            )

    # (13-14) align: L_cl; InfoNCE pools each history with this folder's masked mean, the rest is its own
    cl_loss, align, user_id = None, farm.align, batch["user_id"][rows]
    if with_cl and isinstance(align, InfoNCEAlign):
        h_video, h_live = align.preferences(
            v_hat_video, _padded(v_hat_live), video_mask, live_mask, mean=attention.masked_mean
        )
        cl_loss = align.contrastive_loss(h_video, h_live, video_mask, live_mask, user_id)
    elif with_cl:
        cl_loss = align(v_hat_video, _padded(v_hat_live), video_mask, live_mask, user_id)[0]

    # (16-17) fuse: F^_cross; the cross-attention runs each live length group on its own live length
    fuse = farm.fuse
    if isinstance(fuse, NoFuse):
        return None, cl_loss
    if isinstance(fuse, CrossAttentionFuse) and groups is not None:
        f_hat_cross = groups.apply(
            lambda live, l_mask, video, v_mask, cand: _cross_fuse(fuse, video, live, v_mask, l_mask, cand),
            sequences=(v_hat_live, live_mask),
            rows=(v_hat_video, video_mask, x_cand[rows]),
            output="rows",
        )
    elif isinstance(fuse, CrossAttentionFuse):
        f_hat_cross = _cross_fuse(fuse, v_hat_video, _padded(v_hat_live), video_mask, live_mask, x_cand[rows])
    else:
        f_hat_cross = fuse(v_hat_video, _padded(v_hat_live), video_mask, live_mask, x_cand[rows])[0]
    if f_hat_cross is not None and start:  # rows without a live event: no query, F^_cross = 0
        f_hat_cross = F.pad(f_hat_cross, (0, 0, start, 0))
    return f_hat_cross, cl_loss


def _cross_fuse(
    m: CrossAttentionFuse, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, x_cand: Tensor
) -> Tensor:
    v_cross = attention.cross_attention(m.cross, live, live_mask, video, video_mask)  # (16)
    return attention.target(m.target, x_cand, v_cross, live_mask)  # (17)
