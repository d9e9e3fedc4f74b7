"""``model.backend``: auto takes the CPU backend for fp32 on a CPU and the reference everywhere else; both give
the same model (the per-piece equalities are in tests/model/cpu/)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from farmcli.model import FARM
from farmcli.model import backends as backends_module
from tests.model.helpers import VOCAB, random_batch, tiny_config


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FARM(tiny_config("farm"), VOCAB)


@pytest.fixture
def calls(monkeypatch):
    """Which path each forward took: 'cpu' when the CPU backend's forward ran."""
    seen: list[str] = []
    real = backends_module.fast_forward

    def recording(*args, **kwargs):
        fast = real(*args, **kwargs)
        seen.append("reference" if fast is None else "cpu")
        return fast

    monkeypatch.setattr(backends_module, "fast_forward", recording)
    return seen


def test_auto_takes_the_cpu_backend_in_fp32_on_a_cpu_and_the_reference_under_autocast(model, calls):
    batch = random_batch(8, 12, seed=0)
    model(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch)
    model(batch, return_aux=True)  # analysis reads weights and gates: the reference's
    assert calls == ["cpu", "reference", "reference"]


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_a_backend_in_the_config_is_taken(backend, calls):
    cfg = dataclasses.replace(tiny_config("farm"), backend=backend)
    FARM(cfg, VOCAB)(random_batch(8, 12, seed=0))
    assert calls == [backend]


def test_both_backends_give_the_same_logits_and_loss(model):
    batch = random_batch(16, 12, seed=2, empty_rows=[0], empty_live_rows=[4, 5])
    ref, cpu = model(batch, backend="reference"), model(batch, backend="cpu")
    torch.testing.assert_close(cpu.logits, ref.logits, atol=1e-5, rtol=1e-4)
    assert cpu.cl_loss is not None and ref.cl_loss is not None
    torch.testing.assert_close(cpu.cl_loss, ref.cl_loss, atol=1e-5, rtol=1e-4)


def test_the_cpu_backend_under_autocast_runs_in_fp32(model):
    batch = random_batch(8, 12, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch, backend="cpu")
    assert out.logits.dtype == torch.float32
    torch.testing.assert_close(out.logits, model(batch, backend="reference").logits, atol=1e-5, rtol=1e-4)


def test_a_traced_graph_takes_the_reference():
    from farmcli.exporter import INPUTS, InferenceGraph, example_inputs

    model = FARM(tiny_config("farm"), {**VOCAB, "history_len": 12}).eval()  # the basis made for L = 12
    graph = InferenceGraph(model)
    inputs = example_inputs({**VOCAB}, 12)
    traced = torch.jit.trace(graph, inputs, check_trace=False)
    other = example_inputs({**VOCAB}, 12, seed=5)  # other lengths: a graph fixed on the first batch's groups differs
    torch.testing.assert_close(traced(*other), graph(*other), atol=1e-5, rtol=1e-4)
    assert len(inputs) == len(INPUTS)


def test_an_unknown_backend_is_refused_by_the_config_check():
    from farmcli.config import resolve
    from farmcli.errors import UserError

    with pytest.raises(UserError, match="backend"):
        resolve(overrides={"model": {"backend": "gpu"}})
