"""bf16 on every path, checked on the CPU (CI has no GPU): bf16 autocast is what `--config gpu` trains in, and
every variant's training step, `farm eval --bf16` and `farm predict --bf16` must run there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.model import FarmModule
from farmcli.variants import ablation_variants
from tests.model.helpers import VOCAB, random_batch, tiny_config

runner = CliRunner()
FAST = ["--data", "tiny", "--config", str(Path(__file__).with_name("tiny-model.yaml"))]
BUILT_IN = [*ablation_variants(), "mmoe"]

TOLERANCE = 0.05
"""Largest |logit_bf16 - logit_fp32| on a fresh tiny model (bf16 keeps 8 bits of mantissa; seen: 0.002)."""


def _config(variant: str):
    return tiny_config(head="mmoe") if variant == "mmoe" else tiny_config(variant)


@pytest.mark.parametrize("variant", BUILT_IN)
def test_a_training_step_under_bf16_autocast_is_finite_and_near_fp32(variant):
    torch.manual_seed(0)
    module = FarmModule(VOCAB, _config(variant))
    batch = random_batch(32, 12, seed=4, empty_rows=[0], empty_live_rows=[3, 4, 5])
    with torch.no_grad():
        fp32 = module(batch).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(batch)
        loss, _ = module.compute_loss(out, batch["labels"])
    assert out.logits.dtype == torch.float32  # the towers' output layer runs in fp32 under autocast
    assert torch.isfinite(loss)
    assert (out.logits.float() - fp32).abs().max() < TOLERANCE
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_bf16_logits_keep_the_spread_of_fp32_after_the_prior_bias():
    """The logit in fp32: with the prior bias (log-odds near -3 for a rare task) and the small spread of a barely
    trained model, a bf16 logit would take one or two values per task (AUC 50); fp32 keeps them apart."""
    torch.manual_seed(0)
    module = FarmModule(VOCAB, tiny_config("farm"), label_rates=[0.3, 0.2, 0.1, 0.05, 0.02, 0.01])
    batch = random_batch(256, 12, seed=5)
    with torch.no_grad():
        fp32 = module(batch, with_cl=False).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = module(batch, with_cl=False).logits
    for task in range(fp32.shape[1]):
        assert bf16[:, task].unique().numel() >= fp32[:, task].unique().numel() // 2, task
    assert (bf16 - fp32).abs().max() < TOLERANCE


def test_bf16_mixed_trains_with_gradient_clipping_and_accumulation(tmp_path):
    """Lightning's mixed precision refuses clipping with a fused Adam: the module takes the plain one there."""
    r = runner.invoke(
        app,
        ["train", *FAST, "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "1"]
        + ["--trainer.gradient_clip_val", "1.0", "--trainer.accumulate_grad_batches", "2"]
        + ["--trainer.limit_train_batches", "3", "--fit.runs_dir", str(tmp_path), "--fit.name", "clip"],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "clip" / "checkpoints" / "last.ckpt").is_file()


@pytest.fixture(scope="module")
def bf16_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("bf16-runs")
    for variant in ("farm", "base", "no-cpa", "no-cpf", "mmoe"):
        r = runner.invoke(
            app,
            ["train", *FAST, "--variant", variant, "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "1"]
            + ["--fit.runs_dir", str(runs), "--fit.name", variant],
        )
        assert r.exit_code == 0, f"{variant}: {r.output}"
    return runs


@pytest.mark.slow
def test_bf16_mixed_training_of_every_variant_exits_0(bf16_runs):
    for variant in ("farm", "base", "no-cpa", "no-cpf", "mmoe"):
        assert (bf16_runs / variant / "checkpoints" / "last.ckpt").is_file(), variant


@pytest.mark.slow
def test_eval_and_predict_in_bf16_match_fp32(bf16_runs, tmp_path):
    run = bf16_runs / "farm"
    scores = {}
    for flag in ("--bf16", "--no-bf16"):
        out = tmp_path / f"scores{flag}.parquet"
        r = runner.invoke(app, ["predict", str(run), "--split", "test", "--out", str(out), flag])
        assert r.exit_code == 0, r.output
        scores[flag] = pl.read_parquet(out)
    cols = [c for c in scores["--bf16"].columns if c.startswith("p_")]
    assert cols and scores["--bf16"].height == scores["--no-bf16"].height > 0
    diff = np.abs(scores["--bf16"].select(cols).to_numpy() - scores["--no-bf16"].select(cols).to_numpy()).max()
    assert diff < TOLERANCE  # probabilities, either way off
    for flag in ("--bf16", "--no-bf16"):
        r = runner.invoke(app, ["eval", str(run), flag])
        assert r.exit_code == 0, r.output
    bf16, fp32 = (json.loads((run / f"eval-test{s}.json").read_text()) for s in ("-bf16", ""))
    assert bf16["precision"] == "bf16-mixed" and fp32["precision"] == "32-true"
    assert abs(bf16["model"]["full"]["click"]["auc"] - fp32["model"]["full"]["click"]["auc"]) < 1.0  # the same model


# ------------------------------------------------------------------- farm eval --bf16 beside the fp32 table


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """A one-run ablation (farm, seed 0, tiny, 1 epoch, trained in fp32) and its Table 1 as first written."""
    out = tmp_path_factory.mktemp("bf16-ablation") / "abl"
    args = ["ablate", *FAST, "--variants", "farm", "--seeds", "1", "--trainer.max_epochs", "1", "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return out, args, (out / "table1.json").read_text()


def test_eval_bf16_writes_its_own_table_and_records_the_precision(ablation):
    out, _, _ = ablation
    run = out / "runs" / "farm-s0"
    fp32_json, fp32_csv = (run / "eval-test.json").read_bytes(), (run / "eval-test.csv").read_bytes()
    r = runner.invoke(app, ["eval", str(run), "--bf16"])
    assert r.exit_code == 0, r.output
    assert "eval-test-bf16.json" in r.output and "bf16" in r.output
    assert (run / "eval-test.json").read_bytes() == fp32_json and (run / "eval-test.csv").read_bytes() == fp32_csv
    fp32, bf16 = json.loads(fp32_json), json.loads((run / "eval-test-bf16.json").read_text())
    assert fp32["precision"] == "32-true" and bf16["precision"] == "bf16-mixed"
    assert (run / "eval-test-bf16.csv").read_text().splitlines()[0].startswith("source,group,task,auc")
    for task in ("click", "effective_view"):  # the same model: AUCs within a point of fp32's
        assert abs(bf16["model"]["full"][task]["auc"] - fp32["model"]["full"][task]["auc"]) < 1.0, task


def test_ablate_tables_only_keeps_reading_the_fp32_table(ablation):
    from farmcli.analysis.ablate import collect

    out, args, table1 = ablation
    r = runner.invoke(app, ["eval", str(out / "runs" / "farm-s0"), "--bf16"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*args, "--tables-only"])
    assert r.exit_code == 0, r.output
    assert (out / "table1.json").read_text() == table1
    evals = collect(out / "runs", ["farm"])
    assert evals["farm"][0]["precision"] == "32-true"
