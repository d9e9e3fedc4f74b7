"""``dft_identity`` (model/frequency_identity.py): eq. 9 plus identity * V, gates optionally started at a value."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from farmcli import registry
from farmcli.errors import UserError
from farmcli.model.config import SlotConfig
from farmcli.model.farm import FARM
from farmcli.model.frequency import DFTFrequency
from farmcli.model.frequency_identity import IdentityDFTFrequency
from tests.model.cpu.helpers import assert_same_run, run
from tests.model.helpers import VOCAB, random_batch, tiny_config


def _mask(lengths, L):
    return torch.arange(L)[None, :] >= (L - torch.tensor(lengths))[:, None]


def _pair(identity: float, **kw) -> tuple[IdentityDFTFrequency, DFTFrequency]:
    torch.manual_seed(0)
    module = IdentityDFTFrequency(dim=6, length=10, cutoff=3, gate_dims=(8,), identity=identity, **kw)
    plain = DFTFrequency(dim=6, length=10, cutoff=3, gate_dims=(8,))
    plain.load_state_dict(module.dft.state_dict())
    return module, plain


def test_registered_for_both_domains():
    assert registry.get("live_frequency", "dft_identity") is IdentityDFTFrequency
    assert registry.get("video_frequency", "dft_identity") is IdentityDFTFrequency


@pytest.mark.parametrize("per_channel", [False, True])
def test_identity_zero_is_dft_and_identity_adds_v_at_real_positions(per_channel):
    mask = _mask([3, 10, 0, 7], 10)
    v = torch.randn(4, 10, 6) * mask.unsqueeze(-1)
    module, plain = _pair(0.0)
    f, gates = module(v, mask)
    want, want_gates = plain(v, mask)
    torch.testing.assert_close(f, want)
    for g, w in zip(gates, want_gates):
        torch.testing.assert_close(g, w)
    module.identity = 1.5
    f, _ = module(v, mask)
    torch.testing.assert_close(f, want + 1.5 * v)
    assert torch.equal(f[~mask], torch.zeros(int((~mask).sum()), 6))  # padding stays zero


def test_gate_init_starts_the_gates_near_the_value():
    module = IdentityDFTFrequency(dim=6, length=10, gate_init=0.9)
    mask = _mask([3, 10, 5, 7], 10)
    _, (g_low, g_high) = module(torch.randn(4, 10, 6) * mask.unsqueeze(-1), mask)
    for g in (g_low, g_high):
        assert abs(float(g.detach().mean()) - 0.9) < 0.05
    with pytest.raises(UserError, match="gate_init"):
        IdentityDFTFrequency(dim=6, length=10, gate_init=1.0)


@pytest.mark.parametrize("slot", ["live_frequency", "video_frequency"])
def test_the_cpu_backend_equals_the_reference(slot):
    """The CPU backend does not know the component: it runs it on the padded history, with its own attention."""
    cfg = tiny_config("farm")
    cfg = dataclasses.replace(cfg, **{slot: SlotConfig("dft_identity", {"gate_dims": [8], "gate_init": 0.9})})
    torch.manual_seed(0)
    model = FARM(cfg, VOCAB)
    batch = random_batch(24, 12, seed=3, empty_rows=[0, 5], empty_live_rows=[1, 2, 9, 17])
    assert_same_run(run(model, batch, "cpu"), run(model, batch, "reference"))
    aux = model(batch, return_aux=True).aux
    gate = "delta" if slot == "live_frequency" else "beta"
    assert aux[gate].shape == (24,)


def test_bf16_autocast_keeps_finite_outputs():
    cfg = dataclasses.replace(tiny_config("farm"), live_frequency=SlotConfig("dft_identity", {"gate_dims": [8]}))
    torch.manual_seed(0)
    model = FARM(cfg, VOCAB)
    batch = random_batch(8, 12, seed=1, empty_live_rows=[2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    assert torch.isfinite(out.logits.float()).all()
