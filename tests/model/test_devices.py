"""The reference model makes every tensor on its input's device: run on the ``meta`` device, any tensor made
without a device (on the CPU) meets a meta tensor and fails, as it would meet a CUDA tensor on a GPU."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from farmcli.model import FARM
from farmcli.variants import ablation_variants
from tests.model.helpers import VOCAB, random_batch, tiny_config

VARIANTS = [*ablation_variants(), "mmoe", "shared_bottom"]


def _on_meta(variant: str) -> tuple[FARM, dict[str, Tensor]]:
    cfg = tiny_config(head=variant) if variant in ("mmoe", "shared_bottom") else tiny_config(variant)
    model = FARM(cfg, VOCAB).to("meta")
    batch = {k: v.to("meta") for k, v in random_batch(8, 12, seed=0, empty_rows=[1], empty_live_rows=[2]).items()}
    return model, batch


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("return_aux", [False, True])
def test_forward_and_backward_make_no_tensor_off_the_inputs_device(variant, return_aux):
    model, batch = _on_meta(variant)
    out = model(batch, return_aux=return_aux)  # FARM's own forward: the reference
    loss = out.logits.sum() + (0 if out.cl_loss is None else out.cl_loss)
    loss.backward()
    assert out.logits.device.type == "meta" and out.logits.shape == (8, 6)
    assert all(v.device.type == "meta" for v in out.aux.values())


def test_the_check_fails_for_a_tensor_made_on_the_cpu():
    """The meta device does catch what it is meant to catch (else the test above proves nothing)."""

    class Careless(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x + torch.arange(x.shape[-1])  # no device=x.device

    with pytest.raises((RuntimeError, NotImplementedError)):
        Careless()(torch.zeros(2, 3, device="meta"))


def test_the_frequency_basis_moves_with_the_model_and_is_not_saved():
    model, _ = _on_meta("farm")
    assert model.video_frequency.basis.device.type == "meta"
    assert not any(k.endswith("basis") for k in FARM(tiny_config("farm"), VOCAB).state_dict())
