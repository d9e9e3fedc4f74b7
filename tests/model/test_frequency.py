import pytest
import torch

from farmcli import registry
from farmcli.errors import UserError
from farmcli.model.frequency import DFTFrequency, NoFrequency, frequency_split, low_pass_basis


@pytest.mark.parametrize("L", [10, 11, 50])
@pytest.mark.parametrize("c", [1, 3, 5])
def test_low_plus_high_is_v_and_low_keeps_exactly_c_bins(L, c):
    v = torch.randn(4, L, 6, dtype=torch.float64)
    low, high = frequency_split(v, c, low_pass_basis(L, c, torch.float64))
    torch.testing.assert_close(low + high, v)
    low_bins = torch.fft.rfft(low, dim=1, norm="ortho").abs()
    high_bins = torch.fft.rfft(high, dim=1, norm="ortho").abs()
    assert (low_bins[:, c:] < 1e-10).all()
    assert (high_bins[:, :c] < 1e-10).all()
    assert (low_bins[:, :c] > 1e-6).all()  # the kept bins really are kept


def test_unitary_split_is_orthogonal_in_energy():
    v = torch.randn(2, 50, 3, dtype=torch.float64)
    low, high = frequency_split(v, 3, low_pass_basis(50, 3, torch.float64))
    torch.testing.assert_close((low * high).sum(1), torch.zeros(2, 3, dtype=torch.float64))


def test_cutoff_beyond_the_spectrum_keeps_everything():
    v = torch.randn(2, 6, 3)
    low, high = frequency_split(v, 9)
    torch.testing.assert_close(low, v)
    assert high.abs().max() < 1e-5


def _mask(lengths, L):
    return torch.arange(L)[None, :] >= (L - torch.tensor(lengths))[:, None]


def test_gates_are_one_scalar_per_sample_in_0_1_and_padding_stays_zero():
    torch.manual_seed(0)
    module = DFTFrequency(dim=6, length=10, cutoff=3)
    mask = _mask([3, 10, 0, 7], 10)
    v = torch.randn(4, 10, 6) * mask.unsqueeze(-1)
    f, (g_low, g_high) = module(v, mask)
    assert f.shape == v.shape
    assert g_low.shape == (4,) and g_high.shape == (4,)
    for g in (g_low, g_high):
        assert ((g > 0) & (g < 1)).all()
    assert torch.equal(f[~mask], torch.zeros(int((~mask).sum()), 6))
    assert torch.isfinite(f).all()
    # with both gates equal, F = gate * V: the split is exact at real positions
    low, high = frequency_split(v, 3)
    expected = (g_low[:, None, None] * low + g_high[:, None, None] * high) * mask.unsqueeze(-1)
    torch.testing.assert_close(f, expected)


def test_per_channel_gates():
    module = DFTFrequency(dim=6, length=10, per_channel=True)
    mask = _mask([3, 10], 10)
    f, (g_low, g_high) = module(torch.randn(2, 10, 6) * mask.unsqueeze(-1), mask)
    assert g_low.shape == (2, 6) and g_high.shape == (2, 6)


def _low_by_fft(v, c):
    """Low[V] of eq. 3-5 as written: rfft along the sequence, keep the c lowest bins, irfft (unitary)."""
    spectrum = torch.fft.rfft(v, dim=1, norm="ortho")
    keep = (torch.arange(spectrum.shape[1]) < c).to(v.dtype)
    return torch.fft.irfft(spectrum * keep[None, :, None], n=v.shape[1], dim=1, norm="ortho")


@pytest.mark.parametrize("L", [10, 7], ids=["the-basis-length", "another-length"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_output_and_gradients_equal_eq_9_as_written(per_channel, L):
    """Values and gradients equal eq. 9 written out, (g_low Low[V] + g_high High[V]) * mask with Low by the FFT
    and the gates from the mean of V (eq. 10); the module's basis is made for L = 10, another L makes its own."""
    torch.manual_seed(1)
    module = DFTFrequency(dim=6, length=10, cutoff=3, per_channel=per_channel)
    mask = _mask([3, L, 0, 7, 1], L)
    v0 = torch.randn(5, L, 6) * mask.unsqueeze(-1)
    weight = torch.randn(5, L, 6)

    def written(v):
        keep = mask.unsqueeze(-1).float()
        mean = (v * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        g_low, g_high = torch.sigmoid(module.gate(mean)).chunk(2, dim=-1)
        low = _low_by_fft(v, 3)
        return (g_low.unsqueeze(1) * low + g_high.unsqueeze(1) * (v - low)) * keep

    outputs, grads = [], []
    for fn in (lambda v: module(v, mask)[0], written):
        v = v0.clone().requires_grad_()
        module.zero_grad()
        out = fn(v)
        (out * weight).sum().backward()
        outputs.append(out)
        grads.append([v.grad, *(p.grad.clone() for p in module.parameters())])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-6)
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_basis_is_made_for_the_history_length_and_not_saved():
    module = DFTFrequency(dim=6, length=10, cutoff=3)
    assert torch.equal(module.basis, low_pass_basis(10, 3)) and module.basis.shape == (10, 5)
    assert "basis" not in module.state_dict()  # derived from (L, c): checkpoints stay as they were
    assert set(module.state_dict()) == {name for name, _ in module.named_parameters()}


def test_none_passes_v_through_with_no_parameters():
    v, mask = torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)
    module = NoFrequency(dim=4, length=5)
    out, gates = module(v, mask)
    assert out is v and gates is None
    assert sum(p.numel() for p in module.parameters()) == 0


def test_registered_for_both_domains():
    for slot in ("video_frequency", "live_frequency"):
        assert registry.get(slot, "dft") is DFTFrequency
        assert registry.get(slot, "none") is NoFrequency


def test_cutoff_must_be_positive():
    with pytest.raises(UserError, match="cut-off"):
        DFTFrequency(dim=4, length=10, cutoff=0)


@pytest.mark.parametrize("length,c", [(50, 1), (50, 3), (50, 9), (50, 25), (50, 26), (50, 40), (7, 3), (7, 4), (1, 1)])
def test_split_equals_the_fft_form(length, c):
    """The basis projection is exactly rfft -> keep c bins -> irfft (unitary), the paper's eq. 3-5."""
    v = torch.randn(5, length, 6, dtype=torch.float64)
    spectrum = torch.fft.rfft(v, dim=1, norm="ortho")
    keep = torch.zeros(spectrum.shape[1], dtype=v.dtype)
    keep[:c] = 1.0
    want = torch.fft.irfft(spectrum * keep[None, :, None], n=length, dim=1, norm="ortho")
    low, high = frequency_split(v, c, low_pass_basis(length, c, torch.float64))
    torch.testing.assert_close(low, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(low + high, v)
    low32, _ = frequency_split(v.float(), c)  # the basis made for it
    torch.testing.assert_close(low32, want.float(), rtol=0, atol=1e-5)
