"""The PLE head stacked into a few large products (model/cpu/heads.py) computes what its modules do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from farmcli.model.cpu.heads import ple, run_layers
from farmcli.model.cpu.options import options
from farmcli.model.heads.ple import PLE
from tests.model.cpu.helpers import assert_same_outputs_and_grads, outputs_and_grads


@pytest.mark.parametrize("lanes", [True, False], ids=["lanes", "no-lanes"])
@pytest.mark.parametrize(("levels", "task_experts", "shared_experts"), [(1, 1, 2), (2, 1, 2), (2, 2, 1), (3, 1, 3)])
def test_stacked_ple_gives_the_module_by_module_outputs_and_gradients(levels, task_experts, shared_experts, lanes):
    torch.manual_seed(0)
    head = PLE(40, 6, levels, shared_experts, task_experts, expert_dims=(16, 8), tower_dims=(8,)).double()
    x = torch.randn(32, 40, dtype=torch.float64)
    want = outputs_and_grads(head, [x], head)
    with options(lanes=lanes):
        got = outputs_and_grads(lambda t: ple(head, t), [x], head)
    assert got[0].shape == (32, 6)
    assert_same_outputs_and_grads(got, want, rtol=1e-10, atol=1e-12)


def test_first_layers_padded_to_whole_lanes_change_nothing():
    """The stacked first layers get zero rows up to whole vector lanes (8 experts x 128 + 26 gate outputs ->
    1,056): outputs and gradients as unpadded, and as the modules'."""
    torch.manual_seed(1)
    head = PLE(216, 6)
    x = torch.randn(64, 216)
    want = outputs_and_grads(head, [x], head)
    for lanes in (False, True):
        with options(lanes=lanes):
            assert_same_outputs_and_grads(outputs_and_grads(lambda t: ple(head, t), [x], head), want)


def test_dropout_in_eval_mode_and_no_gradient_mode():
    torch.manual_seed(2)
    head = PLE(24, 6, expert_dims=(16, 8), tower_dims=(8,), dropout=0.3).eval()
    x = torch.randn(16, 24)
    with torch.no_grad():
        torch.testing.assert_close(ple(head, x), head(x), rtol=1e-5, atol=1e-6)


def test_stacked_ple_keeps_each_expert_a_module_of_its_own():
    head = PLE(40, 6)
    names = {name for name, _ in head.named_parameters()}
    assert "levels.0.task_experts.5.0.0.weight" in names and "levels.1.shared_experts.1.2.bias" in names


def test_run_layers_refuses_a_layer_it_has_no_stacked_form_for():
    mlps = [nn.Sequential(nn.Linear(4, 3), nn.Tanh()) for _ in range(2)]
    with pytest.raises(TypeError, match="Tanh"):
        run_layers(mlps, torch.randn(2, 5, 4))
