"""Table 1 / Table 4 arithmetic on hand-made evaluations, and `farm ablate` end to end (resume, refusal)."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmcli.analysis import tables
from farmcli.analysis.ablate import ABLATION_FORMAT, parse_seeds
from farmcli.cli import app
from farmcli.data.schema import TASKS
from farmcli.variants import all_variants

runner = CliRunner()
TINY = str(Path(__file__).parents[1] / "tiny-model.yaml")


def fake_eval(auc: float, groups=("full", "low", "mid", "high")) -> dict:
    cell = {"auc": auc, "uauc": auc - 10, "gauc": auc - 9, "n_users": 5, "n_skipped": 0, "n_samples": 50}
    return {
        "model": {g: {t: dict(cell) for t in TASKS} for g in groups},
        "oracle": {g: {t: dict(cell, auc=90.0, uauc=80.0, gauc=81.0) for t in TASKS} for g in groups},
    }


def test_table1_means_stds_improve_and_marks():
    evals = {
        "base": {0: fake_eval(70.0), 1: fake_eval(71.0), 2: fake_eval(72.0)},
        "farm": {0: fake_eval(71.0), 1: fake_eval(72.1), 2: fake_eval(72.9)},  # +1, +1.1, +0.9: consistent
        "no-cpa": {0: fake_eval(72.0), 1: fake_eval(70.0), 2: fake_eval(73.5)},
    }  # +1, -2.1, +0.6: noise
    t1 = tables.table1(evals, {"base": "PLE (Base)", "farm": "FARM", "no-cpa": "w/o C-PA"})
    rows = {r["row"]: r for r in t1["rows"]}
    assert list(rows) == ["PLE (Base)", "FARM", "Improve", "w/o C-PA", "Oracle (true p)"]
    base = rows["PLE (Base)"]["cells"]["click/auc"]
    assert base["mean"] == pytest.approx(71.0) and base["std"] == pytest.approx(1.0)
    improve = rows["Improve"]["cells"]["click/auc"]
    assert improve["mean"] == pytest.approx(1.0) and improve["mark"] is True
    assert rows["w/o C-PA"]["cells"]["gift/uauc"]["mark"] is False
    assert rows["Oracle (true p)"]["cells"]["like/gauc"]["mean"] == 81.0
    md = tables.table1_markdown(t1)
    assert "| Improve | +1.00 ± 0.10 * |" in md
    csv_text = tables.table1_csv(t1)
    assert csv_text.count("\n") == 1 + 5 * 21  # six tasks and their mean, x 3 metrics


def test_table4_gain_per_group_and_missing_base():
    evals = {"base": {0: fake_eval(70.0), 1: fake_eval(70.0)}, "farm": {0: fake_eval(70.5), 1: fake_eval(70.7)}}
    t4 = tables.table4(evals, ["low", "mid", "high"])
    assert [r["group"] for r in t4["rows"]] == ["low", "mid", "high", "full"]
    assert t4["rows"][0]["cells"]["click"]["mean"] == pytest.approx(0.6)
    assert tables.table4({"farm": evals["farm"]}, ["low"]) is None


def test_the_mean_column_is_each_seeds_six_task_mean_paired_by_seed():
    """The verdict columns: per seed the mean over the six tasks, then mean, spread and mark over seeds."""

    def run(shift: float, click: float) -> dict:
        ev = fake_eval(70.0 + shift)
        for group in ev["model"].values():
            group["click"]["auc"] = click  # one task apart: the mean moves by a sixth of it
        return ev

    evals = {"base": {0: run(0.0, 70.0), 1: run(0.0, 70.0)}, "farm": {0: run(1.0, 77.0), 1: run(0.5, 71.5)}}
    t1 = {r["row"]: r["cells"] for r in tables.table1(evals, {"base": "Base", "farm": "FARM"})["rows"]}
    assert t1["FARM"]["mean/auc"]["values"] == pytest.approx([(5 * 71.0 + 77.0) / 6, (5 * 70.5 + 71.5) / 6])
    assert t1["Improve"]["mean/auc"]["values"] == pytest.approx([2.0, 4 / 6])  # paired per seed, not per task
    assert t1["Oracle (true p)"]["mean/uauc"]["mean"] == 80.0
    t4 = tables.table4(evals, ["low"])
    assert t4["rows"][0]["cells"]["mean"]["mean"] == pytest.approx(4 / 3)
    assert "| group | click |" in tables.table4_markdown(t4) and "| gift | mean |" in tables.table4_markdown(t4)
    missing = run(0.0, 70.0)
    del missing["model"]["low"]["gift"]
    assert tables._metric(missing, "low", "mean", "auc") is None  # a mean of five tasks would mislead


def test_single_seed_has_no_spread_and_no_mark():
    t1 = tables.table1({"base": {0: fake_eval(70.0)}, "farm": {0: fake_eval(75.0)}}, {})
    improve = [r for r in t1["rows"] if r["row"] == "Improve"][0]["cells"]["click/auc"]
    assert improve["std"] is None and improve["mark"] is False
    assert tables.fmt(improve, signed=True) == "+5.00"


@pytest.mark.slow
def test_ablate_end_to_end_resumes_and_refuses_other_settings(tmp_path):
    out = tmp_path / "abl"
    args = [
        "ablate",
        "--data",
        "tiny",
        "--variants",
        "base,farm",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--config",
        TINY,
        "--trainer.max_epochs",
        "1",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    for f in ("table1.md", "table1.csv", "table1.json", "table4.md", "table4.csv", "table4.json", "table1-low.md"):
        assert (out / f).is_file(), f
    for group in ("low", "mid", "high"):  # each group's Table 1 in all three formats, as the main one
        assert {f"table1-{group}.{ext}" for ext in ("md", "csv", "json")} <= {p.name for p in out.iterdir()}
        assert f"table1-{group}.csv" in r.output
    assert json.loads((out / "ablation.json").read_text())["seeds"] == [0, 1]
    t1 = json.loads((out / "table1.json").read_text())
    assert [row["row"] for row in t1["rows"]] == ["PLE (Base)", "FARM", "Improve", "Oracle (true p)"]
    assert t1["rows"][0]["cells"]["click/auc"]["n"] == 2
    low = json.loads((out / "table1-low.json").read_text())
    assert low["group"] == "low" and low["rows"][1]["cells"]["click/auc"] != t1["rows"][1]["cells"]["click/auc"]
    low_csv = list(csv.DictReader((out / "table1-low.csv").open()))
    farm_click = next(r for r in low_csv if r["variant"] == "farm" and r["task"] == "click" and r["metric"] == "auc")
    assert float(farm_click["mean"]) == pytest.approx(low["rows"][1]["cells"]["click/auc"]["mean"], abs=1e-4)

    # Interrupt one run after the fact: it is the only one trained again; the others are skipped.
    victim = out / "runs" / "farm-s1"
    kept = (out / "runs" / "base-s0" / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    info = json.loads((victim / "run.json").read_text())
    (victim / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    (victim / "eval-test.json").unlink()
    # --tables-only: the tables of the finished runs, nothing trained
    r = runner.invoke(app, [*args, "--tables-only"])
    assert r.exit_code == 0, r.output
    assert "1 of 4 runs not finished" in r.output and not (victim / "eval-test.json").exists()
    t1 = json.loads((out / "table1.json").read_text())
    assert [row["cells"]["click/auc"]["n"] for row in t1["rows"][:2]] == [2, 1]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.output.count("skipped") == 3 and "farm, seed 1 (continuing)" in r.output
    assert (out / "runs" / "base-s0" / "checkpoints" / "best.ckpt").stat().st_mtime_ns == kept
    assert (victim / "eval-test.json").is_file()

    # A `farm eval --groups low` of one run rewrites its test table without mid/high: the rerun evaluates it
    # again instead of building Table 4 from the other seed alone.
    assert runner.invoke(app, ["eval", str(out / "runs" / "farm-s0"), "--groups", "low"]).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert set(json.loads((out / "runs" / "farm-s0" / "eval-test.json").read_text())["model"]) == {
        "full",
        "low",
        "mid",
        "high",
    }
    t4 = json.loads((out / "table4.json").read_text())
    assert all(row["cells"]["click"]["n"] == 2 for row in t4["rows"])

    # Continued with a seed list: its seeds' runs are reused, the tables cover those seeds alone, ablation.json
    # records them, and the finished runs of the other seed are kept and named.
    seeds_at = args.index("--seeds") + 1
    r = runner.invoke(app, [*args[:seeds_at], "1,", *args[seeds_at + 1 :]])
    assert r.exit_code == 0, r.output
    assert r.output.count("skipped") == 2 and "training" not in r.output
    assert "seed(s) 0 from an earlier farm ablate" in " ".join(r.output.split())
    assert json.loads((out / "ablation.json").read_text())["seeds"] == [1]
    t1 = json.loads((out / "table1.json").read_text())
    assert [row["seeds"] for row in t1["rows"][:2]] == [[1], [1]]
    assert (out / "runs" / "base-s0" / "eval-test.json").is_file()

    # Other settings on the same output directory would mix incomparable runs: refused before training.
    r = runner.invoke(app, [*args[:-1], "2"])
    assert r.exit_code == 2 and "other settings" in r.output


def test_ablate_jobs_trains_runs_side_by_side_with_the_sequential_result(tmp_path):
    common = ["--data", "tiny", "--seeds", "1", "--config", TINY, "--trainer.max_epochs", "1"]
    r = runner.invoke(app, ["ablate", "--variants", "base", "--out", str(tmp_path / "seq"), *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["ablate", "--variants", "base,farm", "--jobs", "2", "--out", str(tmp_path / "par"), *common]
    )
    assert r.exit_code == 0, r.output
    assert "base, seed 0: finished" in r.output and "farm, seed 0: finished" in r.output
    t1 = json.loads((tmp_path / "par" / "table1.json").read_text())
    assert [row["cells"]["click/auc"]["n"] for row in t1["rows"][:2]] == [1, 1]
    # The same seed gives the same model, whichever process and thread count trained it (to float rounding).
    seq, par = (json.loads((tmp_path / d / "runs" / "base-s0" / "eval-test.json").read_text()) for d in ("seq", "par"))
    for task in TASKS:
        assert par["model"]["full"][task]["auc"] == pytest.approx(seq["model"]["full"][task]["auc"], abs=0.05)
    r = runner.invoke(app, ["ablate", "--variants", "base", "--jobs", "0", "--out", str(tmp_path / "x"), *common])
    assert r.exit_code == 2 and "--jobs must be >= 1" in r.output


@pytest.mark.parametrize(
    "text,seeds",
    [("3", [0, 1, 2]), ("1", [0]), ("0,1,2", [0, 1, 2]), ("5,7", [5, 7]), (" 7, 2 ", [7, 2]), ("7,", [7])],
)
def test_seeds_take_a_count_or_a_list(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("value", ["-1", "a", "1,1", "", "0", ",", "1.5", "2,-3", "4294967296,"])
def test_bad_seeds_exit_2_naming_the_option_and_the_fix(value, tmp_path):
    """Refused before any data is built or anything written: the message names --seeds and both valid forms."""
    out = tmp_path / "abl"
    r = runner.invoke(app, ["ablate", "--data", "tiny", "--variants", "farm", f"--seeds={value}", "--out", str(out)])
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "--seeds" in text and "--seeds 3 = seeds 0, 1, 2" in text and "--seeds 0,1,2" in text
    assert "Traceback" not in r.output and not out.exists()


def fake_ablation(out: Path, runs: dict[str, dict[int, float]]) -> None:
    """OUT as an earlier farm ablate left it: finished runs (run.json, eval-test.json) and ablation.json."""
    for variant, seeds in runs.items():
        for seed, auc in seeds.items():
            run = out / "runs" / f"{variant}-s{seed}"
            run.mkdir(parents=True)
            (run / "run.json").write_text(json.dumps({"status": "finished"}))
            (run / "eval-test.json").write_text(json.dumps(fake_eval(auc)))
    seeds = sorted({s for v in runs.values() for s in v})
    (out / "ablation.json").write_text(json.dumps({"format": ABLATION_FORMAT, "variants": list(runs), "seeds": seeds}))


def test_tables_cover_the_seeds_given_and_each_group_has_a_csv(tmp_path):
    """An ablation of OUT continued with a seed list tabulates those seeds only (the other finished runs are kept
    and named); every group's Table 1 is written as Markdown, CSV and JSON, the CSV with the JSON's numbers."""
    out = tmp_path / "abl"
    fake_ablation(out, {"base": {0: 70.0, 1: 71.0, 2: 90.0}, "farm": {0: 72.0, 1: 72.0, 2: 50.0}})
    args = ["ablate", "--data", "tiny", "--variants", "base,farm", "--out", str(out), "--tables-only"]
    r = runner.invoke(app, [*args, "--seeds", "0,1"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "finished runs of seed(s) 2 from an earlier farm ablate" in text and "not in these tables" in text
    t1 = json.loads((out / "table1.json").read_text())
    assert [row["seeds"] for row in t1["rows"][:2]] == [[0, 1], [0, 1]]
    improve = t1["rows"][2]["cells"]["click/auc"]
    assert improve["mean"] == pytest.approx(1.5) and improve["n"] == 2  # seed 2 (+40 the other way) left out
    assert "seeds 0, 1;" in (out / "table1.md").read_text()
    for group in ("low", "mid", "high"):
        assert (out / f"table1-{group}.md").is_file() and (out / f"table1-{group}.json").is_file()
        rows = list(csv.DictReader((out / f"table1-{group}.csv").open()))
        assert len(rows) == 4 * 7 * 3  # base, farm, Improve, oracle x six tasks and the mean x three metrics
        want = json.loads((out / f"table1-{group}.json").read_text())["rows"][2]["cells"]["mean/gauc"]["mean"]
        got = next(r for r in rows if r["row"] == "Improve" and r["task"] == "mean" and r["metric"] == "gauc")
        assert float(got["mean"]) == pytest.approx(want, abs=1e-4)

    r = runner.invoke(app, [*args, "--seeds", "3"])  # a count: seeds 0, 1, 2, all of them
    assert r.exit_code == 0, r.output
    assert "earlier farm ablate" not in r.output
    assert json.loads((out / "table1.json").read_text())["rows"][0]["seeds"] == [0, 1, 2]


def test_variants_reads_at_80_columns():
    """`farm variants` fits 80 columns: every variant's name starts a line, with its row in Table 1 and what it
    changes against farm, and its whole description is there, word for word, in order."""
    r = runner.invoke(app, ["variants"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    flat = " ".join(r.output.split())
    for v in all_variants():
        entry = next(line for line in lines if line.startswith(f"{v.name} "))
        assert v.label in entry
        if v.ablation_order is not None:
            assert f" {v.ablation_order} " in entry
        assert " ".join(v.description.split()) in flat, v.name
    no_cpa = next(line for line in lines if line.startswith("no-cpa "))
    assert "align=none" in no_cpa and "video_frequency" not in no_cpa  # only what differs from farm
