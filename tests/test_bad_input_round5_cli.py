"""Bad input, round 5 (issue 36), the commands' side: empty paths, --save-predictions of another kind, farm ablate's
run names, synth's --preset and seed, a history length past the machine's memory, a resume that would change the
run, runs killed before their first checkpoint or whose data is gone; and the user errors that need no data are
answered before torch (or Lightning) is imported. Each case: exit 2, the words of the message (the input, the
problem, the fix), no traceback, nothing of the user's changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from farmcli.cli import app
from tests.test_bad_input import Case, case, check_case, files, runner, tiny_dataset

CONFIG = str(Path(__file__).with_name("tiny-model.yaml"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("round5-runs")
    r = runner.invoke(
        app,
        ["train", "--data", "tiny", "--config", CONFIG, "--trainer.max_epochs", "1"]
        + ["--fit.runs_dir", str(runs), "--fit.name", "r"],
    )
    assert r.exit_code == 0, r.output
    return runs / "r"


def run_at(edit=None):
    """A copy of the trained run at ./run, then ``edit(copy)``."""

    def make(cwd: Path, run: Path | None) -> None:
        assert run is not None
        shutil.copytree(run, cwd / "run")
        if edit is not None:
            edit(cwd / "run")

    make.needs_run = True  # type: ignore[attr-defined]
    return make


def killed_in_first_epoch(cwd: Path, run: Path | None) -> None:
    """runs/x: what a run killed before its first epoch ended leaves (config.yaml, run.json, logs; no checkpoint)."""
    assert run is not None
    x = cwd / "runs" / "x"
    (x / "logs").mkdir(parents=True)
    shutil.copy(run / "config.yaml", x / "config.yaml")
    (x / "run.json").write_text(json.dumps({"status": "interrupted", "variant": "farm"}))


killed_in_first_epoch.needs_run = True  # type: ignore[attr-defined]


def data_gone(run: Path) -> None:
    """The run's config names a dataset directory that was removed, and run.json's sample store is gone too."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["source"] = "removed-data"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    info = json.loads((run / "run.json").read_text())
    info["store"] = str(run.parent / "no-such-store")
    (run / "run.json").write_text(json.dumps(info))


TRAIN = ("train", "--data", "tiny", "--config", "{config}", "--fit.runs_dir", "runs")
ABLATE = ("ablate", "--data", "tiny", "--seeds", "1", "--config", "{config}", "--out", "abl")
SYNTH = ("data", "synth", "--preset", "tiny")
CASES = [
    # row 12: an empty --cache-dir built in the current folder
    case("data", "build", "tiny", "--cache-dir", "", words=("--cache-dir is empty", "give a path")),
    # row 14: --save-predictions of another kind than parquet is refused, as farm predict refuses it
    case(
        "eval",
        "{run}",
        "--save-predictions",
        "preds.csv",
        words=("--save-predictions preds.csv", "give a .parquet file name", "preds.parquet"),
    ),
    case("predict", "{run}", "--out", "preds.csv", words=("--out preds.csv", "give a .parquet file name")),
    # row 14: farm ablate places its runs itself; --fit.name and --fit.runs_dir were silently ignored
    case(*ABLATE, "--fit.name", "x", words=("--fit.name", "abl/runs/VARIANT-sSEED", "--out DIR")),
    case(*ABLATE, "--fit.runs_dir", "D", words=("--fit.runs_dir", "names and places its runs itself", "--out")),
    case(*ABLATE, "--set", "fit.name=x", words=("--fit.name", "abl/runs/farm-s0")),
    # row 16: the preset is an option, not a simulator setting; a seed in train's range
    case(*SYNTH, "--out", "o", "--set", "preset=small", words=("--set preset=small", "--preset small")),
    case(
        *SYNTH,
        "--out",
        "o",
        "--config",
        "sim.yaml",
        words=("sim.yaml sets preset: small", "--preset small"),
        setup=files(**{"sim.yaml": "preset: small\n"}),
    ),
    case(*SYNTH, "--out", "o", "--seed", "4294967296", words=("--seed 4294967296", "must be >= 0 and <= 4294967295")),
    case(*SYNTH, "--out", "o", "--set", "seed=4294967296", words=("seed = 4294967296", "<= 4294967295")),
    case(
        *SYNTH,
        "--out",
        "o",
        "--config",
        "sim.yaml",
        words="seed = 99999999999",
        setup=files(**{"sim.yaml": "seed: 99999999999\n"}),
    ),
    # row 18f: a resume keeps the run's seed, model, optimiser and data
    case(
        "train",
        "--resume",
        "run",
        "--seed",
        "5",
        words=("--resume run: seed 0 -> 5", "left as it was", "--config run/config.yaml --fit.name NEW --seed 5"),
        setup=run_at(),
    ),
    case("train", "--resume", "run", "--model.cl_weight", "0.1", words="model.cl_weight 0.5 -> 0.1", setup=run_at()),
    case("train", "--resume", "run", "--optim.lr", "0.1", words="optim.lr 0.001 -> 0.1", setup=run_at()),
    case("train", "--resume", "run", "--data.batch_size", "64", words="data.batch_size 512 -> 64", setup=run_at()),
    case("train", "--resume", "run", "--set", "seed=3", "--print-config", words="seed 0 -> 3", setup=run_at()),
    # row 22: a run killed before its first checkpoint; a run whose data is gone
    case(
        "eval",
        "runs/x",
        words=("runs/x", "stopped before its first epoch ended", "--fit.name NEW", "rm -r runs/x"),
        setup=killed_in_first_epoch,
    ),
    case("report", "runs/x", words=("stopped before its first epoch ended", "rm -r"), setup=killed_in_first_epoch),
    case(
        "eval",
        "run",
        words=("the data it was trained on is gone", "removed-data (data.source in run/config.yaml", "--data DIR"),
        setup=run_at(data_gone),
    ),
    case(
        "predict",
        "run",
        "--out",
        "p.parquet",
        words=("the data it was trained on is gone", "removed-data"),
        setup=run_at(data_gone),
    ),
    case(
        "train",
        "--resume",
        "run",
        words=("the data it was trained on is gone", "removed-data"),
        setup=run_at(data_gone),
    ),
    # row 23: an empty path is refused everywhere (it used to mean the current directory)
    case(*SYNTH, "--out", "", words="--out is empty"),
    case(*SYNTH, "--out", "o", "--config", "", words="--config is empty"),
    case("data", "validate", "", words="DATASET is empty"),
    case("data", "inspect", "", words="DATASET is empty"),
    case("data", "build", "", words="DATASET is empty"),
    case("data", "import", "kuailive-m3", "", "--out", "k", words="RAW_DIR is empty"),
    case("data", "import", "kuailive-m3", "raw", "--out", "", words="--out is empty", setup=files(raw="d/")),
    case(*ABLATE[:-1], "", words="--out is empty"),
    case("ablate", "--data", "", "--out", "abl", words="--data is empty"),
    case("ablate", "--data", "tiny", "--config", "", "--out", "abl", words="--config is empty"),
    case("tune", "--data", "tiny", "--space", "optim.lr=0.1,0.2", "--out", "", words="--out is empty"),
    case("tune", "--data", "", "--space", "optim.lr=0.1,0.2", "--out", "t", words="--data is empty"),
    case("tune", "--data", "tiny", "--space", "optim.lr=0.1,0.2", "--config", "", words="--config is empty"),
    case("train", "--data", "tiny", "--config", "", words="--config is empty"),
    case("train", "--resume", "", words="--resume is empty"),
    case("eval", "", words=("RUN is empty", "farm eval farm-runs/RUN")),
    case("predict", "", "--out", "p.parquet", words="RUN is empty"),
    case("predict", "{run}", "--out", "p.parquet", "--data", "", words="--data is empty"),
    case("export", "", "--out", "m.pt", words="RUN is empty"),
    case("report", "", words="RUN is empty"),
    case("report", "{run}", "--compare", "", "--out", "rep", words="--compare is empty"),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_round5_cli(c: Case, tmp_path, monkeypatch, request):
    run = request.getfixturevalue("tiny_run") if c.needs_run else None  # trained in the session's FARM_HOME
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("FARM_HOME", str(home))  # a fresh one: any data built would show here
    check_case(c, cwd, run)
    assert not home.exists() or not any(home.iterdir()), sorted(home.rglob("*"))  # no data built


# ------------------------------------------------------------------------------------------ row 14: predict, no rows


def test_predict_of_a_split_without_rows_says_why_and_runs_no_loop(tiny_run, tmp_path, monkeypatch):
    import polars as pl

    import farmcli.scoring

    monkeypatch.chdir(tmp_path)
    tiny_dataset()(tmp_path, None)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    manifest["valid_end"] = manifest["train_end"]  # no validation window
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(manifest))

    def no_loop(*args, **kwargs):
        raise AssertionError("a predict loop over no rows (Lightning: 'Total length of DataLoader ... is zero')")

    monkeypatch.setattr(farmcli.scoring, "scoring_trainer", no_loop)
    r = runner.invoke(app, ["predict", str(tiny_run), "--data", "d", "--split", "valid", "--out", "p.parquet"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "valid 0 rows" in text and "note: no valid samples" in text and "has no valid window" in text
    assert "valid_end = train_end" in text and "Total length" not in text
    assert pl.read_parquet(tmp_path / "p.parquet").height == 0


# ------------------------------------------------------------------------------------------ row 18e: memory


def test_a_history_length_past_the_machines_memory_is_refused_before_any_data(tmp_path, monkeypatch):
    import farmcli.machine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(farmcli.machine, "available_memory", lambda: 23 * 10**9)  # the machine
    monkeypatch.setattr(farmcli.machine, "trains_on_cpu", lambda trainer: True)
    r = runner.invoke(app, ["train", "--data", "tiny", "--data.history_len", "10000", "--fit.runs_dir", "runs"])
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    for w in (
        "data.history_len = 10,000 needs about",
        "23.0 GB available",
        "data.eval_batch_size 8,192",
        "data.batch_size 1,024",
        "or less fits",
        "lower data.history_len",
        "Nothing was built",
    ):
        assert w in text, (w, r.output)
    assert not any(tmp_path.iterdir()), sorted(tmp_path.rglob("*"))  # no run directory, no data, no store


def test_the_memory_bound_lets_the_default_through_and_the_library_checks_it_too(monkeypatch):
    import farmcli.machine
    from farmcli.config import resolve
    from farmcli.errors import UserError
    from farmcli.machine import check_memory, run_memory
    from farmcli.training import train

    monkeypatch.setattr(farmcli.machine, "trains_on_cpu", lambda trainer: True)
    default = resolve([])
    assert max(run_memory(default).values()) < 2 * 10**9  # L = 50 with the default batches: under 2 GB
    check_memory(default, available=4 * 10**9)
    long = resolve([], overrides=["data.history_len=2000"])
    with pytest.raises(UserError, match="data.history_len = 2,000 needs about"):
        check_memory(long, available=4 * 10**9)
    monkeypatch.setattr(farmcli.machine, "available_memory", lambda: 4 * 10**9)
    with pytest.raises(UserError, match="Nothing was built"):
        train(long)  # farmcli.train, ablate's runs: before the store is built
    small = resolve([], overrides=["data.history_len=2000", "data.batch_size=8", "data.eval_batch_size=8"])
    check_memory(small, available=4 * 10**9)


# ------------------------------------------------------------------------------------------ row 18f: what may change


def test_a_resume_may_change_the_trainer_settings(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    r = runner.invoke(app, ["train", "--resume", str(run), "--trainer.max_epochs", "3", "--print-config"])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout)["trainer"]["max_epochs"] == 3
    r = runner.invoke(app, ["train", "--resume", str(run), "--seed", "0", "--print-config"])  # its own seed
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------------------------------ row 24: the epoch bar


def test_the_progress_bar_counts_epochs_from_one():
    from types import SimpleNamespace

    from farmcli.scoring import PassProgressBar

    bar = PassProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=1)  # type: ignore[assignment]
    assert bar._get_train_description(0).strip() == "Epoch 1/1"
    bar._trainer = SimpleNamespace(max_epochs=3)  # type: ignore[assignment]
    assert bar._get_train_description(2).strip() == "Epoch 3/3"
    bar._trainer = SimpleNamespace(max_epochs=-1)  # type: ignore[assignment]
    assert bar._get_train_description(4).strip() == "Epoch 5"
    assert len(bar._get_train_description(0)) >= len(bar.validation_description)  # no flicker


# ------------------------------------------------------------------------------------------ slow errors


QUICK = [
    ["eval", "{run}", "--save-predictions", "preds.parquet"],  # an existing file of the user's (16.9 s before)
    ["eval", "{run}", "--save-predictions", "preds.csv"],
    ["eval", "", "--split", "test"],
    ["eval", "{run}", "--split", "train"],
    ["eval", "{run}", "--groups", "vip"],
    ["eval", "{run}", "--accelerator", "tpu"],
    ["predict", "{run}", "--out", ""],  # 12.5 s before
    ["predict", "{run}", "--out", "preds.csv"],
    ["predict", "{run}", "--out", "p.parquet", "--split", "bogus"],
    ["export", "{run}", "--out", ""],
    ["export", "no/such/run", "--out", "m.onnx"],
    ["report", "{run}", "--out", ""],
    ["report", "{run}", "--accelerator", "tpu"],
    ["data", "build", "d", "--cache-dir", ""],
]


def test_user_errors_that_need_no_data_are_answered_before_torch_is_imported(tiny_run, tmp_path):
    """Each command in a fresh interpreter: exit 2, and neither torch nor Lightning imported (they take 5-7 s to
    import on a small machine; these answered after 6-17 s before issue 36, now in about half a second)."""
    (tmp_path / "preds.parquet").write_text("the user's own file")
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from farmcli.cli import app\n"
        "r = CliRunner().invoke(app, sys.argv[1:])\n"
        "heavy = [m for m in ('torch', 'lightning') if m in sys.modules]\n"
        "print(r.exit_code, heavy, r.output.replace(chr(10), ' ')[:300])\n"
    )
    for args in QUICK:
        args = [a.replace("{run}", str(tiny_run)) for a in args]
        t0 = time.monotonic()
        p = subprocess.run(
            [sys.executable, "-c", script, *args], cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ)
        )
        took = time.monotonic() - t0
        assert p.returncode == 0, p.stderr
        code, heavy, _ = p.stdout.split(" ", 2)
        assert code == "2" and heavy == "[]", (args, p.stdout, took)
    assert (tmp_path / "preds.parquet").read_text() == "the user's own file"


def test_report_over_a_users_file_answers_before_lightning_is_imported(tiny_run, tmp_path):
    """farm report's --out check needs its list of files (the report package imports torch), not Lightning."""
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "report.md").write_text("mine")
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from farmcli.cli import app\n"
        "r = CliRunner().invoke(app, sys.argv[1:])\n"
        "print(r.exit_code, 'lightning' in sys.modules)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", script, "report", str(tiny_run), "--out", "rep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert p.stdout.split() == ["2", "False"], (p.stdout, p.stderr)
    assert (tmp_path / "rep" / "report.md").read_text() == "mine"
