"""Every built-in variant trains in bf16 on CUDA (`--config gpu`), and its run evaluates, predicts and exports.

Run through the CLI in this process, as a user types it; FARM_HOME is the session's temporary one
(tests/conftest.py), so the ``tiny`` preset is simulated and its sample store built once for all of them.
"""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.data.schema import TASKS

VARIANTS = ("farm", "base", "no-vfa", "no-lfa", "no-cpa", "no-cpf", "mmoe")

runner = CliRunner()


def farm(*args: str) -> str:
    """`farm ARGS` in this process; fails the test with the command's output and traceback unless it exits 0."""
    r = runner.invoke(app, [str(a) for a in args])
    if r.exit_code != 0:
        tb = "".join(traceback.format_exception(*r.exc_info)) if r.exc_info and r.exception else ""
        pytest.fail(f"farm {' '.join(map(str, args))} exited {r.exit_code}\n{r.output}\n{tb}")
    return r.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Callable[[str], Path]:
    """A run of each variant: `farm train --data tiny --config gpu --trainer.fast_dev_run true` (made on first use)."""
    runs = tmp_path_factory.mktemp("gpu-runs")
    made: dict[str, Path] = {}

    def run_of(variant: str) -> Path:
        if variant not in made:
            farm(
                "train",
                "--variant",
                variant,
                "--data",
                "tiny",
                "--config",
                "gpu",
                "--trainer.fast_dev_run",
                "true",
                "--fit.runs_dir",
                runs,
                "--fit.name",
                variant,
            )
            made[variant] = runs / variant
        return made[variant]

    return run_of


def predictions(path: Path) -> np.ndarray:
    df = pl.read_parquet(path)
    return df.select([f"p_{t}" for t in TASKS]).to_numpy()


@pytest.mark.parametrize("variant", VARIANTS)
def test_train_bf16_on_cuda(trained, variant):
    run = trained(variant)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished", info
    assert "bf16" in (run / "config.yaml").read_text()  # --config gpu: bf16-mixed
    table = json.loads((run / "eval-test.json").read_text())
    auc = table["model"]["full"]["click"]["auc"]
    assert auc is None or math.isnan(auc) or 0 <= auc <= 100


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_and_predict_bf16_on_cuda(trained, variant, tmp_path):
    run = trained(variant)
    farm("eval", run, "--bf16", "--accelerator", "gpu")
    assert (run / "eval-test.json").is_file()
    out = tmp_path / "scores.parquet"
    farm("predict", run, "--bf16", "--accelerator", "gpu", "--out", out)
    p = predictions(out)
    assert p.shape[0] > 0 and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()


def test_cuda_scores_match_the_cpus(trained, tmp_path):
    """The same checkpoint scored on the CPU (fp32), on CUDA (fp32) and on CUDA in bf16."""
    run = trained("farm")
    paths = {name: tmp_path / f"{name}.parquet" for name in ("cpu", "cuda", "cuda-bf16")}
    farm("predict", run, "--accelerator", "cpu", "--out", paths["cpu"])
    farm("predict", run, "--accelerator", "gpu", "--out", paths["cuda"])
    farm("predict", run, "--accelerator", "gpu", "--bf16", "--out", paths["cuda-bf16"])
    cpu, cuda, bf16 = (predictions(p) for p in paths.values())
    np.testing.assert_allclose(cuda, cpu, rtol=0, atol=1e-4)
    np.testing.assert_allclose(bf16, cpu, rtol=0, atol=5e-2)  # bf16 keeps ~3 significant digits


@pytest.mark.parametrize("variant", ("farm", "base"))
def test_export_onnx_of_a_cuda_run(trained, variant, tmp_path):
    """`farm export` has no device option (it traces on the CPU): a checkpoint written on CUDA exports."""
    out = tmp_path / f"{variant}.onnx"
    farm("export", trained(variant), "--format", "onnx", "--out", out)
    assert out.is_file() and out.stat().st_size > 0
    spec = json.loads(Path(f"{out}.json").read_text())
    assert spec["variant"] == variant
