"""``fit.backend``: a run setting that FarmModule dispatches (model/backends.py), not a model hyperparameter. auto
takes the CPU backend for fp32 on a CPU and the reference everywhere else; both give the same model (the
per-piece equalities are in tests/model/cpu/). Old checkpoints and run configs that carry ``model.backend`` load."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from farmcli.config import resolve
from farmcli.errors import UserError
from farmcli.model import FARM, FarmModule, ModelConfig
from farmcli.model import cpu as cpu_backend
from farmcli.model.backends import forward, takes_cpu
from tests.model.helpers import VOCAB, random_batch, tiny_config

TINY_MODEL = Path(__file__).parents[1] / "tiny-model.yaml"


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FARM(tiny_config("farm"), VOCAB)


@pytest.fixture
def calls(monkeypatch):
    """Which path each forward took: 'cpu' when the CPU backend's forward ran, else 'reference'."""
    seen: list[str] = []
    real_cpu, real_reference = cpu_backend.forward, FARM.forward

    def on_cpu(*args, **kwargs):
        seen.append("cpu")
        return real_cpu(*args, **kwargs)

    def reference(*args, **kwargs):
        seen.append("reference")
        return real_reference(*args, **kwargs)

    monkeypatch.setattr(cpu_backend, "forward", on_cpu)
    monkeypatch.setattr(FARM, "forward", reference)
    return seen


def test_the_model_knows_no_backend():
    """FARM's forward is the paper's; how to run it is the caller's (ModelConfig has no ``backend``)."""
    assert "backend" not in inspect.signature(FARM.forward).parameters
    assert "backend" not in {f.name for f in dataclasses.fields(ModelConfig)}
    assert not hasattr(FARM, "reference")


def test_auto_takes_the_cpu_backend_in_fp32_on_a_cpu_and_the_reference_under_autocast_or_for_analysis():
    batch = random_batch(4, 6, seed=0)
    assert takes_cpu("auto", batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not takes_cpu("auto", batch)
        assert takes_cpu("cpu", batch)  # asked for: it runs, in fp32 (below)
    for backend in ("auto", "cpu", "reference"):
        assert not takes_cpu(backend, batch, return_aux=True)  # analysis reads weights and gates: the reference's
    assert not takes_cpu("reference", batch)


def test_the_module_runs_its_backend(calls):
    batch = random_batch(8, 12, seed=0)
    for backend in ("auto", "cpu", "reference"):
        FarmModule(VOCAB, tiny_config("farm"), backend=backend)(batch)
    module = FarmModule(VOCAB, tiny_config("farm"))
    assert module.backend == "auto"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module(batch)
    module(batch, return_aux=True)
    assert calls == ["cpu", "cpu", "reference", "reference", "reference"]
    with pytest.raises(UserError, match="fit.backend"):
        FarmModule(VOCAB, tiny_config("farm"), backend="gpu")  # type: ignore[arg-type]


def test_both_backends_give_the_same_logits_and_loss(model):
    batch = random_batch(16, 12, seed=2, empty_rows=[0], empty_live_rows=[4, 5])
    ref, cpu = forward(model, batch, "reference"), forward(model, batch, "cpu")
    torch.testing.assert_close(cpu.logits, ref.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ref.logits, model(batch).logits)  # the reference is FARM's own forward
    assert cpu.cl_loss is not None and ref.cl_loss is not None
    torch.testing.assert_close(cpu.cl_loss, ref.cl_loss, atol=1e-5, rtol=1e-4)


def test_the_cpu_backend_under_autocast_runs_in_fp32(model):
    batch = random_batch(8, 12, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = forward(model, batch, "cpu")
    assert out.logits.dtype == torch.float32
    torch.testing.assert_close(out.logits, model(batch).logits, atol=1e-5, rtol=1e-4)


def test_a_traced_graph_takes_the_reference():
    """Under tracing ``auto`` runs the reference: a graph fixed on the first batch's length groups would differ."""
    from farmcli.exporter import INPUTS, example_inputs

    model = FARM(tiny_config("farm"), {**VOCAB, "history_len": 12}).eval()  # the basis made for L = 12

    class Auto(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.farm = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return forward(self.farm, dict(zip(INPUTS, inputs, strict=True)), "auto", with_cl=False).logits

    inputs = example_inputs({**VOCAB}, 12)
    traced = torch.jit.trace(Auto(), inputs, check_trace=False)
    other = example_inputs({**VOCAB}, 12, seed=5)  # other lengths
    want = model(dict(zip(INPUTS, other, strict=True)), with_cl=False).logits
    torch.testing.assert_close(traced(*other), want, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------- the run setting


def test_the_backend_is_a_run_setting_and_model_backend_its_old_name(tmp_path):
    assert resolve().fit.backend == "auto"
    assert resolve(overrides=["--fit.backend", "reference"]).fit.backend == "reference"
    assert resolve(overrides=["--model.backend", "cpu"]).fit.backend == "cpu"  # the old key, kept as an alias
    old = tmp_path / "config.yaml"  # a run directory's config.yaml of before issue 35
    old.write_text(yaml.safe_dump({"model": {"backend": "reference", "cl_weight": 0.3}}))
    cfg = resolve([old])
    assert cfg.fit.backend == "reference" and cfg.model.cl_weight == 0.3
    assert "backend" not in cfg.to_dict()["model"] and cfg.to_dict()["fit"]["backend"] == "reference"
    assert resolve([old], overrides=["--fit.backend", "cpu"]).fit.backend == "cpu"  # a later layer wins
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({"model": {"backend": "cpu"}, "fit": {"backend": "reference"}}))
    assert resolve([both]).fit.backend == "reference"  # the new key wins within a layer


@pytest.mark.parametrize("key", ["fit.backend", "model.backend"])
def test_an_unknown_backend_is_refused_by_the_config_check(key):
    with pytest.raises(UserError, match=r"fit\.backend"):
        resolve(overrides=[f"--{key}", "gpu"])


def test_the_run_builds_its_module_with_the_run_setting():
    from farmcli.training import build_module

    store = SimpleNamespace(model_shapes=VOCAB, split=lambda name: SimpleNamespace(labels=np.zeros((0, 6))))
    for backend in ("reference", "cpu"):
        cfg = resolve([TINY_MODEL], overrides=["--fit.backend", backend])
        assert build_module(cfg, store).backend == backend


def test_a_checkpoint_that_carries_model_backend_loads(tmp_path):
    """Checkpoints of before issue 35 hold ``model.backend`` among the hyperparameters: it is ignored (the run
    setting decides), and the module's own hyperparameters no longer hold it."""
    torch.manual_seed(0)
    module = FarmModule(VOCAB, tiny_config("farm"), backend="reference")
    assert "backend" not in module.hparams["model"] and "backend" not in module.hparams
    hparams = {**module.hparams, "model": {**module.hparams["model"], "backend": "reference"}}
    path = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": L.__version__},
        path,
    )
    loaded = FarmModule.load_from_checkpoint(path)
    assert loaded.backend == "auto" and loaded.model_cfg == module.model_cfg
    batch = random_batch(6, 12, seed=1)
    torch.testing.assert_close(loaded(batch).logits, module(batch).logits, atol=1e-5, rtol=1e-4)
    assert FarmModule.load_from_checkpoint(path, backend="cpu").backend == "cpu"
