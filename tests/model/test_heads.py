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
