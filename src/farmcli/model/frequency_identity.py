"""``dft_identity``: ``dft`` with each event's own embedding kept beside the bands.

    F = identity * V + g_low * Low[V] + g_high * High[V]      (identity = 0: eq. 9 as the paper writes it)

Why (docs/notebook/QUALITY.md, issue 27): trained on the simulated data, FARM's live gates shut the high band (delta
~0.05); for a short live history High[V] is nearly all of V, so the live target attention (eq. 11) could no longer
find the candidate's own earlier events and FARM's UAUC fell below its base's. With ``identity = 1`` the attention
always sees which event each position was. Computation, parameters and CPU form are dft's; this adds the name
and where the parameters are saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jsonargparse.typing import PositiveInt
from torch import nn

from farmcli.model.frequency import DFTFrequency
from farmcli.registry import register

SAVED_UNDER = "dft."
"""Where checkpoints hold this module's parameters (``live_frequency.dft.gate.0.weight``): it wrapped a
``DFTFrequency`` as ``self.dft`` before issue 35, and the saved names stay so that old checkpoints load."""


@register("video_frequency", "dft_identity")
@register("live_frequency", "dft_identity")
class IdentityDFTFrequency(DFTFrequency):
    """``dft`` with ``identity = 1`` (F = V + eq. 9), saved under ``dft.``; only the default differs."""

    def __init__(
        self,
        dim: int,
        length: int,
        cutoff: int = 3,
        per_channel: bool = False,
        gate_dims: Sequence[PositiveInt] = (64,),
        identity: float = 1.0,
        gate_init: float | None = None,
    ):
        super().__init__(dim, length, cutoff, per_channel, gate_dims, identity, gate_init)
        self.register_state_dict_post_hook(_save_under_dft)
        self.register_load_state_dict_pre_hook(_load_from_under_dft)


def _save_under_dft(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + SAVED_UNDER)]:
        state[prefix + SAVED_UNDER + key[len(prefix) :]] = state.pop(key)


def _load_from_under_dft(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
    for key in [k for k in state if k.startswith(prefix + SAVED_UNDER)]:
        state[prefix + key[len(prefix + SAVED_UNDER) :]] = state.pop(key)
