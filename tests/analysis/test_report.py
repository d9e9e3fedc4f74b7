"""`farm report`: figures, tables and report.md from two tiny runs (FARM and w/o C-PA), bad input, and the plots
on synthetic data."""

import csv
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.data.schema import ACTIVITY_LEVELS

runner = CliRunner()
TINY = [
    "--data",
    "tiny",
    "--config",
    str(Path(__file__).parent.parent / "tiny-model.yaml"),
    "--trainer.max_epochs",
    "1",
]


def _train(runs: Path, name: str, *extra: str) -> Path:
    r = runner.invoke(app, ["train", *TINY, "--fit.runs_dir", str(runs), "--fit.name", name, *extra])
    assert r.exit_code == 0, r.output
    return runs / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-runs")
    return {"farm": _train(root, "farm"), "no-cpa": _train(root, "no-cpa", "--variant", "no-cpa")}


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("report")
    r = runner.invoke(app, ["report", str(runs["farm"]), "--compare", str(runs["no-cpa"]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def store(runs):
    from farmcli.config import resolve
    from farmcli.evaluation import run_store

    return run_store(runs["farm"], resolve([runs["farm"] / "config.yaml"]))


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_report_writes_the_page_and_every_linked_file(report):
    md = (report / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    pngs = [link for link in links if link.endswith(".png")]
    assert {
        "fig3-alignment-cosine.png",
        "fig4-cross-attention.png",
        "table3-gates.png",
        "training-curves.png",
        "training-curves-compare.png",
    } <= set(pngs)
    for link in links:
        assert (report / link).is_file(), link
    for png in pngs:
        w, h = png_size(report / png)
        assert 300 <= w <= 6000 and 200 <= h <= 6000, (png, w, h)
    assert "untrained" in md and "w/o C-PA" in md and "FARM (with C-PA)" in md  # the w/o C-PA definition is said
    assert not list(report.glob(".*.tmp"))  # atomic writes leave no temporaries


def _eligible_users(store) -> set[int]:
    s = store.split("test")
    both = (np.asarray(s.v_end) > np.asarray(s.v_start)) & (np.asarray(s.l_end) > np.asarray(s.l_start))
    return set(np.asarray(s.user_id)[both].tolist())


def test_cosines_one_per_user_in_range(report, store):
    with open(report / "fig3-alignment-cosine.csv") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((report / "report.json").read_text())["figure3"]
    want = _eligible_users(store)
    assert len(summary) == 2
    for label, d in summary.items():
        mine = [r for r in rows if r["label"] == label]
        users = [int(r["user_id"]) for r in mine]
        assert len(users) == len(set(users)) == d["n"] == min(len(want), 10_000)
        assert set(users) == want
        cos = np.array([float(r["cosine"]) for r in mine])
        assert np.all((cos >= -1) & (cos <= 1)) and np.isfinite(cos).all()
        assert abs(cos.mean() - d["mean"]) < 1e-5
    kinds = sorted(d["h"] for d in summary.values())
    assert kinds == ["trained InfoNCE head", "untrained InfoNCE head"]


def test_user_cap_is_a_seeded_sample(store):
    from farmcli.analysis.report.users import alignment_users

    users, idx, eligible = alignment_users(store, "test", max_users=10)
    again, _, _ = alignment_users(store, "test", max_users=10)
    assert len(users) == 10 and eligible == len(_eligible_users(store)) and np.array_equal(users, again)
    assert set(users.tolist()) <= _eligible_users(store)


def test_trained_h_matches_the_forward_pass_and_untrained_h_is_seeded(runs, store):
    import torch.nn.functional as F

    from farmcli.analysis.report.alignment import preference_cosines
    from farmcli.analysis.report.runs import load_run
    from farmcli.analysis.report.users import alignment_users

    _, idx, _ = alignment_users(store, "test", max_users=40)
    farm = load_run(runs["farm"])
    cos, info = preference_cosines(farm, idx, batch_size=16)
    with torch.inference_mode():
        aux = farm.module(store.batch("test", idx), return_aux=True).aux
    ref = F.cosine_similarity(aux["h_video"], aux["h_live"], dim=-1).numpy()
    assert np.allclose(cos, ref, atol=1e-5) and info["h"] == "trained InfoNCE head"
    nocpa = load_run(runs["no-cpa"])
    a, info = preference_cosines(nocpa, idx)
    b, _ = preference_cosines(nocpa, idx, batch_size=7)
    assert info["h"] == "untrained InfoNCE head" and info["head_dims"] == [128, 64]
    assert np.allclose(a, b, atol=1e-5)


def test_gate_table_per_group_in_unit_interval(report, store):
    summary = json.loads((report / "report.json").read_text())
    rows = summary["table3"]
    act = np.asarray(store.split("test").activity)
    groups_present = {ACTIVITY_LEVELS[a] for a in np.unique(act)} | {"full"}
    assert {r["group"] for r in rows} == groups_present
    assert {r["gate"] for r in rows} == {"alpha", "beta", "gamma", "delta"}
    for r in rows:
        for k in ("mean", "p10", "p50", "p90"):
            assert 0 < r[k] < 1, r
        assert r["p10"] <= r["p50"] <= r["p90"]
    full_alpha = next(r for r in rows if r["group"] == "full" and r["gate"] == "alpha")
    assert full_alpha["n"] == store.n("test")  # every test sample has a video history on tiny
    with open(report / "table3-gates.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    md = (report / "report.md").read_text()
    assert "| group | alpha | beta | gamma | delta |" in md


def test_default_user_is_the_low_active_one_with_the_longest_live_history(report, store):
    from farmcli.analysis.report.users import history_lengths, last_sample_per_user

    fig4 = json.loads((report / "report.json").read_text())["figure4"]
    users, idx = last_sample_per_user(store)
    nv, nl = history_lengths(store, "test", idx)
    act = np.asarray(store.split("test").activity)[idx]
    ok = (act == 0) & (nv > 0) & (nl > 0)
    assert fig4["activity"] == "low" and fig4["user_id"] in set(users[ok].tolist())
    assert fig4["n_live"] == nl[ok].max() and fig4["n_live"] == nl[users == fig4["user_id"]][0]


def test_report_for_a_chosen_user(runs, store, tmp_path):
    pytest.importorskip("matplotlib")
    from farmcli.analysis import build_report
    from farmcli.analysis.report.users import history_lengths, last_sample_per_user

    users, idx = last_sample_per_user(store)
    nv, nl = history_lengths(store, "test", idx)
    uid = int(users[(nv > 0) & (nl > 0)][-1])
    md = build_report(runs["farm"], user=uid, out=tmp_path, max_users=20)
    fig4 = json.loads((tmp_path / "report.json").read_text())["figure4"]
    assert md == tmp_path / "report.md" and fig4["user_id"] == uid and fig4["why"] == "chosen with --user"
    assert json.loads((tmp_path / "report.json").read_text())["figure3"]["FARM (with C-PA)"]["n"] == 20
    assert not (tmp_path / "training-curves-compare.png").exists()


def test_unknown_user_exits_2_naming_it(runs):
    r = runner.invoke(app, ["report", str(runs["farm"]), "--user", "987654321"])
    assert r.exit_code == 2 and "987654321" in r.output and "Traceback" not in r.output


def test_user_without_test_samples_exits_2(runs, store):
    test_users = set(np.asarray(store.split("test").user_id).tolist())
    train_only = next(int(u) for u in np.asarray(store.split("train").user_id) if int(u) not in test_users)
    r = runner.invoke(app, ["report", str(runs["farm"]), "--user", str(train_only)])
    assert r.exit_code == 2 and str(train_only) in r.output and "no samples in the test split" in r.output


@pytest.mark.parametrize("what", ["missing", "empty", "config-only"])
def test_not_a_run_directory_exits_2(tmp_path, what):
    target = tmp_path / "run"
    if what != "missing":
        target.mkdir()
    if what == "config-only":
        (target / "config.yaml").write_text("seed: 0\n")
    r = runner.invoke(app, ["report", str(target)])
    assert r.exit_code == 2 and str(target) in r.output and "Traceback" not in r.output


def test_training_logs_concatenate_resumed_legs(tmp_path):
    from farmcli.analysis.report.curves import curve_inputs, training_logs

    logs = tmp_path / "logs"
    (logs / "resume1").mkdir(parents=True)
    (logs / "metrics.csv").write_text(
        "epoch,step,train/bce_click,train/cl,val/auc_mean\n0,9,0.7,5.0,\n0,13,,,0.55\n1,19,0.6,4.8,\n"
    )
    (logs / "resume1" / "metrics.csv").write_text(
        "epoch,step,train/bce_click,val/auc_mean,val/auc_click\n1,19,0.59,,\n1,27,,0.6,0.61\n2,29,0.5,,\n"
    )
    got = training_logs(tmp_path)
    steps, bce, epochs = got["train/bce_click"]
    assert steps.tolist() == [9, 19, 29] and bce.tolist() == [0.7, 0.59, 0.5]  # the resumed leg wins at step 19
    assert epochs.tolist() == [0, 1, 2]
    assert got["val/auc_mean"].x.tolist() == [0, 1] and got["val/auc_mean"].epoch.tolist() == [0, 1]
    inputs = curve_inputs(got)
    assert list(inputs["task_losses"]) == ["click"] and inputs["cl"].y.tolist() == [5.0, 4.8]
    assert list(inputs["val"]) == ["mean", "click"]


def _series(epochs: list[int], values: list[float]):
    from farmcli.analysis.report.curves import Series

    e = np.array(epochs)
    return Series(np.arange(len(e)), np.array(values, dtype=np.float64), e)


def test_epoch_means_are_the_mean_and_standard_error_of_each_epochs_steps():
    from farmcli.analysis.report.curves import epoch_means

    m = epoch_means(_series([0, 0, 0, 1, 1], [1.0, 2.0, 3.0, 5.0, 7.0]))
    assert m.epoch.tolist() == [0, 1] and m.n.tolist() == [3, 2] and m.mean.tolist() == [2.0, 6.0]
    assert m.se.tolist() == pytest.approx([1.0 / np.sqrt(3), np.sqrt(2.0) / np.sqrt(2)])


def test_a_trend_is_called_only_beyond_two_standard_errors():
    from farmcli.analysis.report.curves import TREND_SE, epoch_means, trend

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, 40)
    flat = trend(epoch_means(_series([0] * 20 + [1] * 20, list(0.5 + noise))))
    falling = trend(epoch_means(_series([0] * 20 + [1] * 20, list(0.5 + noise - np.repeat([0.0, 0.2], 20)))))
    se = noise[:20].std(ddof=1) / np.sqrt(20), noise[20:].std(ddof=1) / np.sqrt(20)
    assert flat.noise == pytest.approx(TREND_SE * np.hypot(*se))
    assert flat.beyond_noise is (abs(flat.change) > flat.noise) and not flat.beyond_noise
    assert falling.beyond_noise is True and falling.change == pytest.approx(flat.change - 0.2)
    assert trend(epoch_means(_series([0, 1], [0.9, 0.1]))).beyond_noise is None  # one step per epoch: no noise
    one_epoch = trend(epoch_means(_series([3, 3, 3], [0.9, 0.5, 0.1])))
    assert one_epoch.beyond_noise is None and one_epoch.first_epoch == one_epoch.last_epoch == 3


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """A tiny run of 2 epochs whose log keeps every training step (the per-epoch means need several)."""
    root = tmp_path_factory.mktemp("curve-runs")
    return _train(root, "two", "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1")


def _epoch_steps(run: Path, column: str) -> dict[int, np.ndarray]:
    """The logged training values of ``column`` per epoch, read straight from logs/metrics.csv."""
    with open(run / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(column)]
    return {e: np.array([float(r[column]) for r in rows if int(r["epoch"]) == e]) for e in (0, 1)}


def test_curves_of_a_two_epoch_run_are_epoch_means_and_trends_beyond_noise(two_epoch_run, tmp_path):
    pytest.importorskip("matplotlib")
    from types import SimpleNamespace

    from farmcli.analysis.report import curves
    from farmcli.data.schema import TASKS

    run = SimpleNamespace(run=two_epoch_run, name="two", label="FARM")
    sec = curves.section([run], tmp_path)
    assert sec.files == {"curves": "training-curves.png"} and png_size(tmp_path / "training-curves.png")[0] > 300
    stats = sec.summary["two"]
    text = " ".join(sec.lines)
    assert set(stats["bce"]) == set(TASKS) and "first logged step" not in text
    for task in TASKS:
        steps = _epoch_steps(two_epoch_run, f"train/bce_{task}")
        assert min(len(v) for v in steps.values()) >= 2, task  # several logged steps in each epoch
        got = stats["bce"][task]
        assert (got["first_epoch"], got["last_epoch"]) == (0, 1)
        assert got["first"] == pytest.approx(steps[0].mean()) and got["last"] == pytest.approx(steps[1].mean())
        se = [v.std(ddof=1) / np.sqrt(len(v)) for v in steps.values()]
        beyond = abs(steps[1].mean() - steps[0].mean()) > 2 * np.hypot(*se)
        assert got["beyond_noise"] is bool(beyond), task
        values = f"{got['first']:.3f} -> {got['last']:.3f}"
        said = (
            f"{task}: no trend beyond noise ({values}"
            if not beyond
            else f"{task}: {'falls' if got['change'] < 0 else 'rises'} {values}"
        )
        assert said in text, (task, text)
    assert stats["epochs"] == 2 and "validation AUC per epoch" in text


# ------------------------------------------------------------------------------------------- plots alone


@pytest.fixture
def plots():
    pytest.importorskip("matplotlib")
    from farmcli.analysis import plots

    return plots


def test_plots_on_synthetic_data(plots, tmp_path):
    rng = np.random.default_rng(0)
    files = [
        plots.cosine_histogram(
            {"FARM (with C-PA)": rng.uniform(0.2, 1, 500), "w/o C-PA": rng.uniform(-1, 1, 400)}, tmp_path / "cos.png"
        ),
        plots.attention_heatmap(
            rng.dirichlet(np.ones(50), size=12),
            [f"a{i} t{i % 7}" for i in range(12)],
            [f"a{i * 1000} t{i}" for i in range(50)],
            tmp_path / "att.png",
        ),
        plots.gate_boxplot(
            {
                g: {grp: rng.beta(4, 2, 50) for grp in ("low", "mid", "full")}
                for g in ("alpha", "beta", "gamma", "delta")
            },
            tmp_path / "gates.png",
        ),
        _epoch_figure(rng, tmp_path / "epochs.png"),
    ]
    for f in files:
        w, h = png_size(f)
        assert w >= 300 and h >= 200
    # the heatmap grows with the number of positions
    small = plots.attention_heatmap(np.ones((2, 3)) / 3, ["a1 t1", "a2 t2"], ["a", "b", "c"], tmp_path / "s.png")
    assert png_size(small)[0] < png_size(tmp_path / "att.png")[0]
    assert not list(tmp_path.glob(".*.tmp"))


def _epoch_figure(rng, path: Path) -> Path:
    """The report's epoch-level training curves on synthetic logs: 3 epochs of 50 steps, one of them a resumed
    run's epoch with a single step (no error bar)."""
    from farmcli.analysis.report.curves import Series, epoch_curves, epoch_means

    epochs = np.repeat([0, 1, 2], [50, 50, 1])
    steps = np.arange(len(epochs))

    def logged(level: float) -> Series:
        return Series(steps, rng.uniform(0.5, 1.5, len(steps)) * level, epochs)

    def per_epoch(values) -> Series:
        return Series(np.arange(3), np.asarray(values, dtype=np.float64), np.arange(3))

    return epoch_curves(
        {"click": epoch_means(logged(0.5)), "gift": epoch_means(logged(0.005))},
        path,
        cl=epoch_means(logged(5.0)),
        val={"mean": per_epoch([0.6, 0.65, 0.64]), "click": per_epoch([0.62, 0.66, 0.65])},
        val_losses={"click": per_epoch([0.5, 0.48, 0.49]), "gift": per_epoch([0.006, 0.005, 0.005])},
        val_cl=per_epoch([5.1, 5.0, 4.9]),
    )


def test_heatmap_rejects_mismatched_labels(plots, tmp_path):
    with pytest.raises(ValueError):
        plots.attention_heatmap(np.ones((2, 3)), ["x"], ["a", "b", "c"], tmp_path / "bad.png")
