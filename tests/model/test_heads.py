"""The PLE head stacked into a few large products (model/heads/stacked.py) computes what its modules do."""

from __future__ import annotations

import pytest
import torch

from farmcli.model.heads.ple import PLE


@pytest.mark.parametrize(("levels", "task_experts", "shared_experts"), [(1, 1, 2), (2, 1, 2), (2, 2, 1), (3, 1, 3)])
def test_stacked_ple_gives_the_module_by_module_outputs_and_gradients(levels, task_experts, shared_experts):
    torch.manual_seed(0)
    head = PLE(40, 6, levels, shared_experts, task_experts, expert_dims=(16, 8), tower_dims=(8,)).double()
    x = torch.randn(32, 40, dtype=torch.float64, requires_grad=True)
    results = []
    for stacked in (False, True):
        head.stacked = stacked
        out = head(x)
        results.append((out, torch.autograd.grad((out * out.detach().sin()).sum(), [x, *head.parameters()])))
    (want, want_grads), (got, got_grads) = results
    assert got.shape == (32, 6)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_stacked_ple_keeps_each_expert_a_module_of_its_own():
    head = PLE(40, 6)
    names = {name for name, _ in head.named_parameters()}
    assert "levels.0.task_experts.5.0.0.weight" in names and "levels.1.shared_experts.1.2.bias" in names
    assert head.stacked


def test_first_layers_padded_to_whole_lanes_change_nothing():
    """The stacked first layers get zero rows up to whole vector lanes (8 experts x 128 + 26 gate outputs ->
    1,056): outputs and gradients as unpadded."""
    from farmcli.model.layers import lane_padding

    torch.manual_seed(1)
    head = PLE(216, 6)
    x0 = torch.randn(64, 216)
    results = []
    for pad in (False, True):
        head.zero_grad()
        x = x0.clone().requires_grad_()
        with lane_padding(pad):
            out = head(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out, [x.grad, *(p.grad for p in head.parameters())]))
    (out, grads), (out_pad, grads_pad) = results
    torch.testing.assert_close(out_pad, out, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads_pad, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
