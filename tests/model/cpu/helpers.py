"""Run a model (or a piece) and compare two runs: outputs and every gradient."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from farmcli.model.backends import forward
from farmcli.model.config import Backend
from farmcli.model.farm import FARM

ATOL, RTOL = 1e-5, 1e-4


@dataclass
class Run:
    logits: Tensor
    cl_loss: Tensor | None
    grads: dict[str, Tensor]


def _weights(shape: torch.Size) -> Tensor:
    """Fixed, uneven weights for a loss: every output's gradient differs (a plain sum would hide a swap)."""
    return torch.linspace(-1.0, 1.5, int(torch.Size(shape).numel())).view(shape)


def run(model: FARM, batch: Mapping[str, Tensor], backend: Backend, with_cl: bool = True) -> Run:
    """One forward pass run by ``backend`` (``reference``: ``model(batch)`` itself) and the backward of a weighted
    sum of the logits plus L_cl."""
    model.zero_grad(set_to_none=True)
    out = forward(model, batch, backend, with_cl=with_cl)
    loss = (out.logits * _weights(out.logits.shape)).sum()
    if out.cl_loss is not None:
        loss = loss + out.cl_loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return Run(out.logits.detach(), None if out.cl_loss is None else out.cl_loss.detach(), grads)


def assert_same_run(got: Run, want: Run, atol: float = ATOL, rtol: float = RTOL) -> None:
    torch.testing.assert_close(got.logits, want.logits, atol=atol, rtol=rtol)
    assert (got.cl_loss is None) == (want.cl_loss is None)
    if want.cl_loss is not None:
        torch.testing.assert_close(got.cl_loss, want.cl_loss, atol=atol, rtol=rtol)
    assert got.grads.keys() == want.grads.keys()
    for name, grad in want.grads.items():
        torch.testing.assert_close(got.grads[name], grad, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


def outputs_and_grads(
    fn: Callable[..., Tensor], inputs: Sequence[Tensor], module: nn.Module | None = None
) -> tuple[Tensor, list[Tensor]]:
    """fn(*inputs) and the gradients of a weighted sum of it for the float inputs and ``module``'s parameters
    (zeros where one gets none)."""
    xs = [x.clone().requires_grad_() if x.is_floating_point() else x for x in inputs]
    params = [] if module is None else list(module.parameters())
    for p in params:
        p.grad = None
    out = fn(*xs)
    (out * _weights(out.shape).to(out.dtype)).sum().backward()
    grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in xs if x.is_floating_point()]
    grads += [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    return out.detach(), grads


def assert_same_outputs_and_grads(
    got: tuple[Tensor, list[Tensor]], want: tuple[Tensor, list[Tensor]], atol: float = ATOL, rtol: float = RTOL
) -> None:
    torch.testing.assert_close(got[0], want[0], atol=atol, rtol=rtol)
    assert len(got[1]) == len(want[1])
    for i, (g, w) in enumerate(zip(got[1], want[1], strict=True)):
        assert torch.isfinite(g).all(), i
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m, i=i: f"gradient {i}: {m}")
