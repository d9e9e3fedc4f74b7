"""``dft_identity`` (model/frequency_identity.py): ``DFTFrequency`` with identity = 1 (eq. 9 plus identity * V),
gates optionally started at a value, its parameters saved under the names of before issue 35."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

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
    plain.gate.load_state_dict(module.gate.state_dict())
    return module, plain


def test_registered_for_both_domains_as_dft_with_identity_one():
    for slot in ("live_frequency", "video_frequency"):
        module = registry.get(slot, "dft_identity")(dim=6, length=10)
        assert isinstance(module, DFTFrequency) and module.identity == 1.0
        assert type(module).forward is DFTFrequency.forward  # dft's computation, nothing of its own
        assert registry.get(slot, "dft")(dim=6, length=10).identity == 0.0


def test_parameters_are_saved_and_loaded_under_the_names_of_before():
    """Before issue 35 dft_identity wrapped a DFTFrequency as ``dft``: its checkpoints name ``dft.gate.*``, and a
    resumed run checks the checkpoint's names against the model's (training.check_fits)."""
    torch.manual_seed(0)
    module = IdentityDFTFrequency(dim=6, length=10, gate_dims=(8,))
    state = module.state_dict()
    assert list(state) == ["dft.gate.0.weight", "dft.gate.0.bias", "dft.gate.2.weight", "dft.gate.2.bias"]
    outer = nn.ModuleDict({"live_frequency": module, "video_frequency": DFTFrequency(dim=6, length=10)})
    assert {k for k in outer.state_dict() if ".dft." in k} == {f"live_frequency.{k}" for k in state}
    torch.manual_seed(1)
    other = IdentityDFTFrequency(dim=6, length=10, gate_dims=(8,))
    assert not torch.equal(other.gate[0].weight, module.gate[0].weight)
    other.load_state_dict(state)  # strict: every name found
    assert torch.equal(other.gate[0].weight, module.gate[0].weight)


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


@pytest.mark.parametrize("cls", [IdentityDFTFrequency, DFTFrequency])
def test_gate_init_starts_the_gates_near_the_value(cls):
    module = cls(dim=6, length=10, gate_init=0.9)
    mask = _mask([3, 10, 5, 7], 10)
    _, (g_low, g_high) = module(torch.randn(4, 10, 6) * mask.unsqueeze(-1), mask)
    for g in (g_low, g_high):
        assert abs(float(g.detach().mean()) - 0.9) < 0.05
    with pytest.raises(UserError, match="gate_init"):
        cls(dim=6, length=10, gate_init=1.0)


@pytest.mark.parametrize("slot", ["live_frequency", "video_frequency"])
def test_the_cpu_backend_equals_the_reference(slot):
    """The CPU backend runs it as dft, in its own form (model/cpu/frequency.py)."""
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
