"""FARM (Fig. 2): slots filled from the registry, the forward pass in the order of equations 8-18.

The preference encoder of eq. 12 is shared by align (eq. 13) and fuse (eq. 16), so FARM owns it, built only when
one of them ``uses_preference``; a ``none`` slot adds no parameters and no loss term. The target attentions of
eq. 11 exist in every variant (over the raw V without a frequency module).

This is the model as the paper writes it: plain PyTorch on padded [B, L, D] tensors with masks, the same on every
device and dtype. ``fit.backend`` (model/backends.py) may run the same parameters through a faster path tested
equal to this one (model/cpu/, which imports this module, never the other way).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from farmcli import registry
from farmcli.errors import UserError
from farmcli.model import params
from farmcli.model.config import N_TASKS, ModelConfig, SlotConfig, VocabSizes
from farmcli.model.embed import EmbeddingLayer
from farmcli.model.heads.common import in_fp32
from farmcli.model.layers import SelfAttention, TargetAttention, attention_weights, scale_grad
from farmcli.slots import SLOTS, Align, FrequencyModule, Fuse, Head, missing_members


@dataclass
class FarmOutput:
    """What the forward pass returns, whichever backend computed it."""

    logits: Tensor
    """[B, 6] in TASKS order (click, effective_view, long_view, like, comment, gift)."""
    cl_loss: Tensor | None
    """L_cl of eq. 14; None when align is ``none``."""
    aux: dict[str, Tensor] = field(default_factory=dict)
    """With ``return_aux``: h_video, h_live, the gates alpha, beta (video) and gamma, delta (live),
    cross_attention [B, heads, L_live, L_video], video/live_target_attention [B, heads, L], as present."""


class PreferenceEncoder(nn.Module):
    """Eq. 12: V^_video = MH-Self-Att(V_video), V^_live = MH-Self-Att(V_live) (each user's own preferences)."""

    def __init__(self, video_dim: int, live_dim: int, heads: int):
        super().__init__()
        self.video = SelfAttention(video_dim, heads)
        self.live = SelfAttention(live_dim, heads)

    def forward(self, v_video: Tensor, v_live: Tensor, video_mask: Tensor, live_mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.video(v_video, video_mask)[0], self.live(v_live, live_mask)[0]


def build(slot: str, spec: SlotConfig, **dims: Any) -> Any:
    """The slot's registered component with FARM's widths and checked params, checked against the slot's Protocol."""
    factory = registry.get(slot, spec.name)
    params.check(slot, spec.name, factory, spec.params)
    component = factory(**dims, **spec.params)
    missing = missing_members(slot, component)
    if missing:
        raise UserError(
            f"{slot} '{spec.name}' ({type(component).__qualname__}) lacks {', '.join(missing)}, which every "
            f"{slot} component provides (see farmcli.slots.{SLOTS[slot].protocol.__name__})."
        )
    return component


def head_input(f_hat_video: Tensor, f_hat_live: Tensor, f_hat_cross: Tensor | None, x_cand: Tensor) -> Tensor:
    """Eq. 18's Concat(F^_video, F^_live, F^_cross) with x_cand appended ("Where we depart" 2), for both backends."""
    return torch.cat([f_hat_video, f_hat_live, *([] if f_hat_cross is None else [f_hat_cross]), x_cand], dim=-1)


class FARM(nn.Module):
    """Batch of ids -> FarmOutput (six logits, L_cl, and for analysis the aux tensors); see the module docstring."""

    def __init__(
        self,
        cfg: ModelConfig | Mapping[str, Any],
        vocab: VocabSizes | Mapping[str, int],
        label_rates: Sequence[float] | None = None,
    ):
        """``label_rates``: the six training label rates, each task's starting log-odds with ``output_bias: prior``."""
        super().__init__()
        self.cfg = cfg = ModelConfig.parse(cfg)
        vocab = VocabSizes.parse(vocab)
        d1, d2, dc, length = cfg.embed.d1, cfg.embed.d2, cfg.embed.cand_dim, vocab.history_len
        self.embed = EmbeddingLayer(cfg.embed, vocab)
        self.video_frequency: FrequencyModule = build("video_frequency", cfg.video_frequency, dim=d1, length=length)
        self.live_frequency: FrequencyModule = build("live_frequency", cfg.live_frequency, dim=d2, length=length)
        self.video_target = TargetAttention(dc, d1, cfg.target_heads)
        self.live_target = TargetAttention(dc, d2, cfg.target_heads)
        self.align: Align = build("align", cfg.align, video_dim=d1, live_dim=d2)
        self.fuse: Fuse = build("fuse", cfg.fuse, video_dim=d1, live_dim=d2, cand_dim=dc)
        uses_preference = self.align.uses_preference or self.fuse.uses_preference
        self.preference = PreferenceEncoder(d1, d2, cfg.preference_heads) if uses_preference else None
        self.head: Head = build("head", cfg.head, in_dim=d1 + d2 + self.fuse.out_dim + dc, n_tasks=N_TASKS)
        if cfg.output_bias == "prior" and label_rates is not None:
            self.set_output_bias([math.log(max(r, 1e-6) / max(1 - r, 1e-6)) for r in label_rates])

    def set_output_bias(self, logits: list[float]) -> None:
        """Start the six task logits at ``logits`` (heads without towers keep their own init)."""
        if hasattr(self.head, "set_output_bias"):
            self.head.set_output_bias(logits)

    def forward(self, batch: Mapping[str, Tensor], return_aux: bool = False, with_cl: bool = True) -> FarmOutput:
        """Eq. 8-18 in order. ``return_aux``: also the attention weights, gates and h of eq. 13 (analysis);
        ``with_cl=False`` skips the align (eq. 13-14): scoring needs no L_cl, and no ``user_id`` then."""
        video_mask, live_mask = batch["v_mask"].bool(), batch["l_mask"].bool()

        with attention_weights(return_aux):  # the attentions return their weights for analysis only
            # (8) embedding layer
            v_video, v_live, x_cand = self.embed(batch)

            # (9-10) intra-domain frequency-aware module: F = gate_low * Low[V] + gate_high * High[V]
            f_video, video_gates = self.video_frequency(v_video, video_mask)
            f_live, live_gates = self.live_frequency(v_live, live_mask)

            # (11) target attention of the candidate over each domain's history
            f_hat_video, video_weights = self.video_target(x_cand, f_video, video_mask)
            f_hat_live, live_weights = self.live_target(x_cand, f_live, live_mask)

            # (12) preference encoder, shared by align and fuse (V itself where neither asks for it)
            v_hat_video, v_hat_live = v_video, v_live
            if self.preference is not None:
                scale = self.cfg.preference_grad
                v_hat_video, v_hat_live = self.preference(
                    scale_grad(v_video, scale), scale_grad(v_live, scale), video_mask, live_mask
                )

            # (13-14) cross-domain preference align: L_cl
            cl_loss, align_aux = None, dict[str, Tensor]()
            if with_cl:
                cl_loss, align_aux = self.align(v_hat_video, v_hat_live, video_mask, live_mask, batch["user_id"])

            # (16-17) cross-domain preference fuse: F^_cross (None without a fuse)
            f_hat_cross, fuse_aux = self.fuse(v_hat_video, v_hat_live, video_mask, live_mask, x_cand)

            # (18) + (6) multi-task head on Concat(F^_video, F^_live, F^_cross, x_cand)
            logits = in_fp32(self.head, head_input(f_hat_video, f_hat_live, f_hat_cross, x_cand))

        aux: dict[str, Tensor] = {}
        if return_aux:
            aux = {"video_target_attention": video_weights, "live_target_attention": live_weights}
            aux.update(align_aux, **fuse_aux)
            if video_gates is not None:
                aux["alpha"], aux["beta"] = video_gates
            if live_gates is not None:
                aux["gamma"], aux["delta"] = live_gates
        return FarmOutput(logits, cl_loss, aux)
