"""``dft_window``: the frequency module of eq. 9-10 with eq. 10's Mean(V) over the whole window of L positions.

A research plugin (issue 27; out of the library in issue 35: experiments/README.md). ``dft`` gates on the mean
of the history's events; this one on the mean over all L positions with padding as zeros, so its size tells the
gate how full the window is. Low[V] is taken over the window, so for a history of a few events it is nearly zero
and F is nearly g_high V; only the window mean lets the gates see that. What it answered, docs/notebook/QUALITY.md,
"Second round on `default`: who has a live history": nothing changes (the live delta gate stays at 0.04); the
trained gates do not use the information, so it was not kept.

Loaded as any plugin: ``--model.live_frequency experiments.plugins.window_gate.WindowGateDFTFrequency`` (or
``dft_window`` once ``experiments.plugins`` is imported, as experiments/quality_sweep.py does). Everything but
the gate's input is the library's ``dft``: the same parameters, split and mask, so a state dict moves between
the two.
"""

from __future__ import annotations

import torch
from torch import Tensor

from farmcli.model.frequency import DFTFrequency, frequency_split
from farmcli.registry import register


def window_mean(v: Tensor, mask: Tensor) -> Tensor:
    """Mean over all L positions of v [B, L, D], padding counted as zeros."""
    return (v * mask.to(v.dtype).unsqueeze(-1)).sum(1) / v.shape[1]


@register("video_frequency", "dft_window")
@register("live_frequency", "dft_window")
class WindowGateDFTFrequency(DFTFrequency):
    """F = g_low Low[V] + g_high High[V] (eq. 9), gates = Sigmoid(MLP(window mean of V)) (eq. 10 over the
    window). Gates returned as ``dft`` returns them (Table 3's alpha, beta / gamma, delta). It overrides forward,
    so the CPU backend (model/cpu/frequency.py, ``runs_on_trailing``) runs this forward on the padded history, as
    the reference does: the same result, without the backend's speed-up."""

    def forward(self, v: Tensor, mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        g_low, g_high = torch.sigmoid(self.gate(window_mean(v, mask))).chunk(2, dim=-1)  # (10) over the window
        basis = self.basis if v.shape[1] == self.basis.shape[0] else None
        low, high = frequency_split(v, self.cutoff, basis)  # (3-5)
        f = (g_low.unsqueeze(1) * low + g_high.unsqueeze(1) * high) * mask.unsqueeze(-1).to(low.dtype)  # (9)
        if not self.per_channel:
            g_low, g_high = g_low.squeeze(-1), g_high.squeeze(-1)
        return f, (g_low, g_high)
