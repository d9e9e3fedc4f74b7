"""The CPU backend's frequency module (model/cpu/frequency.py) computes ``DFTFrequency``'s F (eq. 9) in two
passes, on a history cut to its trailing positions too: the reference's values and gradients."""

from __future__ import annotations

import pytest
import torch

from farmcli import registry
from farmcli.model.cpu.frequency import _gated_split, _GatedSplit, frequency, runs_on_trailing, trailing_basis
from farmcli.model.frequency import DFTFrequency, NoFrequency, frequency_split, low_pass_basis
from farmcli.model.frequency_identity import IdentityDFTFrequency
from tests.model.cpu.helpers import assert_same_outputs_and_grads, outputs_and_grads


def _mask(lengths, L):
    return torch.arange(L)[None, :] >= (L - torch.tensor(lengths))[:, None]


BUILT_IN = ("none", "dft", "dft_identity")


@pytest.mark.parametrize("slot", ["video_frequency", "live_frequency"])
def test_every_built_in_frequency_component_runs_in_the_backends_form(slot):
    """A built-in frequency component this file does not compute would run on the padded live history, every
    length group at full length: correct, but the speed-up lost without a word. A new one must be added here."""
    names = [n for n in registry.list(slot) if registry.get(slot, n).__module__.startswith("farmcli.model.")]
    assert sorted(names) == sorted(BUILT_IN)
    for name in names:
        assert runs_on_trailing(registry.get(slot, name)(dim=6, length=10)), name


def test_a_subclass_with_a_forward_of_its_own_gets_the_padded_history():
    """This file computes DFTFrequency's forward; a plugin that changes it is run as the reference runs it."""

    class Doubled(DFTFrequency):
        def forward(self, v, mask):
            f, gates = super().forward(v, mask)
            return 2 * f, gates

    assert not runs_on_trailing(Doubled(dim=6, length=10))
    assert not runs_on_trailing(torch.nn.Identity())


@pytest.mark.parametrize("identity", [0.0, 1.0], ids=["dft", "dft_identity"])
@pytest.mark.parametrize("L", [10, 7], ids=["the-basis-length", "another-length"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_frequency_equals_the_module_with_gradients(per_channel, L, identity):
    torch.manual_seed(1)
    module = DFTFrequency(dim=6, length=10, cutoff=3, per_channel=per_channel, gate_dims=(8,), identity=identity)
    mask = _mask([3, L, 0, 5, 1], L)
    v = torch.randn(5, L, 6) * mask.unsqueeze(-1)  # as the embedding gives it: zero at padding
    want = outputs_and_grads(lambda t: module(t, mask)[0], [v], module)
    got = outputs_and_grads(lambda t: frequency(module, t, mask), [v], module)
    assert_same_outputs_and_grads(got, want)
    assert torch.equal(got[0][~mask], torch.zeros(int((~mask).sum()), 6))
    with torch.no_grad():  # without the hand-written backward
        torch.testing.assert_close(frequency(module, v, mask), want[0], atol=1e-5, rtol=1e-4)


def test_no_frequency_passes_v_through():
    module, v, mask = NoFrequency(dim=4, length=5), torch.randn(2, 5, 4), _mask([2, 5], 5)
    assert frequency(module, v, mask) is v
    tail = v[:, -2:]
    assert frequency(module, tail, mask[:, -2:], length=5) is tail


TRAILING_MODULES = {
    "dft": lambda: DFTFrequency(dim=6, length=10, cutoff=3),
    "dft-per-channel": lambda: DFTFrequency(dim=6, length=10, cutoff=3, per_channel=True),
    "dft_identity": lambda: IdentityDFTFrequency(dim=6, length=10, gate_init=0.8),
    "dft_identity-0": lambda: IdentityDFTFrequency(dim=6, length=10, identity=0.0),
    "dft_identity-per-channel": lambda: IdentityDFTFrequency(dim=6, length=10, identity=1.5, per_channel=True),
}


@pytest.mark.parametrize("make", TRAILING_MODULES.values(), ids=TRAILING_MODULES.keys())
def test_trailing_positions_give_the_full_length_result(make):
    """A history cut to its last l positions with ``length`` = L (the rest padding): F there as the module's at
    full length, and the same gradients (the basis rows are the window's last l, not a length-l basis)."""
    torch.manual_seed(2)
    module = make()
    mask = _mask([3, 4, 0, 1], 10)
    v = torch.randn(4, 10, 6) * mask.unsqueeze(-1)
    want_out, want_grads = outputs_and_grads(lambda t: module(t, mask)[0][:, -4:], [v], module)
    got_out, got_grads = outputs_and_grads(lambda t: frequency(module, t[:, -4:], mask[:, -4:], length=10), [v], module)
    # at padding V's gradient differs (at full length U^T V reads the zeros there); nothing upstream reads it
    want_grads[0], got_grads[0] = want_grads[0] * mask.unsqueeze(-1), got_grads[0] * mask.unsqueeze(-1)
    assert_same_outputs_and_grads((got_out, got_grads), (want_out, want_grads))


def test_the_trailing_basis_is_the_last_rows_of_the_full_one():
    module = DFTFrequency(dim=6, length=10, cutoff=3)
    v = torch.zeros(2, 4, 6)
    assert torch.equal(trailing_basis(module, v, 10), module.basis[-4:])
    assert torch.equal(trailing_basis(module, v, None), low_pass_basis(4, 3))  # v is the whole window
    torch.testing.assert_close(trailing_basis(module, v, 12), low_pass_basis(12, 3)[-4:])  # another length


def test_the_gated_split_backward_is_the_gradient_of_its_forward():
    torch.manual_seed(2)
    mask = _mask([3, 8, 0, 5], 8)
    keep = mask.double()
    v = (torch.randn(4, 8, 3, dtype=torch.float64) * keep.unsqueeze(-1)).requires_grad_()
    g_v = torch.rand(4, dtype=torch.float64, requires_grad=True)
    g_mix = torch.randn(4, dtype=torch.float64, requires_grad=True)
    u = low_pass_basis(8, 3, torch.float64)
    out = _GatedSplit.apply(v, keep, g_v, g_mix, u)
    low = frequency_split(v, 3, u)[0]
    want = (g_v[:, None, None] * v + g_mix[:, None, None] * low) * keep.unsqueeze(-1)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(_gated_split(v, keep, g_v, g_mix, u, u.transpose(0, 1) @ v), want)
    assert torch.autograd.gradcheck(lambda *t: _GatedSplit.apply(t[0], keep, t[1], t[2], u), (v, g_v, g_mix))
