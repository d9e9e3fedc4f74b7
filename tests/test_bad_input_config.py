"""Bad input, round 4 (issue 25), the config's rows: values a component cannot take (row 5), a cut-off past the
history's spectrum and a run name that leaves farm-runs/ (row 17), non-finite numbers and the messages that named
the wrong cause (row 18), and the small things: an empty FARM_HOME, a config error answered before the heavy
imports."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from farmcli.cli import app
from tests.test_bad_input import Case, _snapshot, case, check_case, files, runner, tiny_dataset

PRINT = ("train", "--data", "tiny", "--print-config")
TUNE = ("tune", "--data", "tiny", "--out", "t", "--space")
CASES = [
    # row 5: component values the model cannot take are refused by the component's signature, naming the key
    case(*PRINT, "--model.head.expert_dims", "[]", words=("model.head.expert_dims = []", "at least one")),
    case(*PRINT, "--model.head.expert_dims", "[0]", words=("model.head.expert_dims = [0]", "each entry must be > 0")),
    case(*PRINT, "--model.head.tower_dims", "[-5]", words=("model.head.tower_dims = [-5]", "must be > 0")),
    case(*PRINT, "--model.head.dropout", "1.5", words=("model.head.dropout = 1.5", ">= 0 and < 1")),
    case(*PRINT, "--model.head.dropout", "-0.1", words=("model.head.dropout", ">= 0 and < 1")),
    case(*PRINT, "--model.head.levels", "0", words=("model.head.levels = 0", ">= 1 and <= 8")),
    # round 5, row 11: a head that would run for hours (1,000 sequential levels) is bounded by its type
    case(*PRINT, "--model.head.levels", "1000", words=("model.head.levels = 1000", ">= 1 and <= 8")),
    case(*PRINT, "--model.head.shared_experts", "100", words=("model.head.shared_experts = 100", "<= 64")),
    case(
        *PRINT,
        "--model.head.task_experts",
        "0",
        "--model.head.shared_experts",
        "0",
        words=("model.head.task_experts", "model.head.shared_experts", "at least one expert"),
    ),
    case(*PRINT, "--model.head.name", "mmoe", "--model.head.experts", "0", words=("model.head.experts = 0", "> 0")),
    case(*PRINT, "--model.head.name", "mmoe", "--model.head.expert_dims", "[]", words="model.head.expert_dims = []"),
    case(
        *PRINT,
        "--model.head.name",
        "shared_bottom",
        "--model.head.bottom_dims",
        "[]",
        words=("model.head.bottom_dims = []", "at least one"),
    ),
    case(*PRINT, "--model.head.name", "mmoe", "--model.head.dropout", "1", words=("model.head.dropout = 1", "< 1")),
    case(*PRINT, "--model.align.dims", "[]", words=("model.align.dims = []", "at least one")),
    case(*PRINT, "--model.align.dims", "[16, 0]", words=("model.align.dims = [16, 0]", "> 0")),
    case(*PRINT, "--model.fuse.dim", "0", words=("model.fuse.dim = 0", "> 0")),
    case(*PRINT, "--model.video_frequency.gate_dims", "[-1]", words=("model.video_frequency.gate_dims", "> 0")),
    case(*PRINT, "--model.head.expert_dims", "[a]", words=("model.head.expert_dims = ['a']", "expected integers")),
    case(*TUNE, "model.head.dropout=0.1,1.5", words=("model.head.dropout = 1.5", ">= 0 and < 1")),
    case(*TUNE, "model.head.expert_dims=[64],[]", words=("model.head.expert_dims = []", "at least one")),
    # row 17: the cut-off keeps at most the L // 2 + 1 bins of a length-L history; a run name is one folder
    case(
        *PRINT,
        "--model.video_frequency.cutoff",
        "1000",
        words=("model.video_frequency.cutoff = 1000", "data.history_len = 50", "<= 26"),
    ),
    case(
        *PRINT,
        "--data.history_len",
        "10",
        "--model.live_frequency.cutoff",
        "7",
        words=("model.live_frequency.cutoff = 7", "data.history_len = 10", "<= 6"),
    ),
    case(*PRINT, "--data.history_len", "2", words=("model.video_frequency.cutoff = 3", "data.history_len = 2")),
    case(
        *PRINT,
        "--model.live_frequency",
        "dft_identity",
        "--model.live_frequency.cutoff",
        "30",
        words=("model.live_frequency.cutoff = 30", "data.history_len = 50", "<= 26"),
    ),
    case(*PRINT, "--fit.name", "../../x", words=("fit.name = '../../x'", "one folder name", "--fit.runs_dir")),
    case(*PRINT, "--fit.name", "a/b", words="fit.name = 'a/b'"),
    case(*PRINT, "--fit.name", "..", words="fit.name = '..'"),
    case(*PRINT, "--fit.name", ".", words="fit.name = '.'"),
    case("train", "--data", "tiny", "--fit.name", "../x", words="fit.name"),
    # row 18: inf and nan are refused at the config check, naming the key (not a NaN loss blaming the data)
    case(*PRINT, "--model.cl_weight", "inf", words=("model.cl_weight = inf", "finite")),
    case(*PRINT, "--model.cl_weight", "nan", words=("model.cl_weight = nan", "finite")),
    case(*PRINT, "--model.embed.init_std", "inf", words=("model.embed.init_std = inf", "finite")),
    case(*PRINT, "--set", "optim.lr=.nan", words=("optim.lr = nan", "finite")),
    case(*PRINT, "--model.preference_grad", ".inf", words=("model.preference_grad = inf", "finite")),
    case(*PRINT, "--trainer.gradient_clip_val", "inf", words=("trainer.gradient_clip_val = inf", "finite")),
    case(*PRINT, "--model.align.tau", "inf", words=("model.align.tau = inf", "finite")),
    case(*PRINT, "--model.align.tau", ".inf", words=("model.align.tau = inf", "finite")),
    case(
        *PRINT,
        "--config",
        "c.yaml",
        words=("model.head.dropout = nan", "finite"),
        setup=files(**{"c.yaml": "model: {head: {name: ple, params: {dropout: .nan}}}\n"}),
    ),
    case("train", "--data", "tiny", "--model.cl_weight", "inf", words=("model.cl_weight = inf", "finite")),
    # row 18: a dotted option without its value, --set without '=', devices 0, a variant's setting outside model:
    case(*PRINT, "--trainer.max_epochs", words=("--trainer.max_epochs needs a value", "--trainer.max_epochs=VALUE")),
    case(
        "train",
        "--data",
        "tiny",
        "--trainer.max_epochs",
        "--model.cl_weight",
        "0.3",
        words="--trainer.max_epochs needs",
    ),
    case("train", "--trainer.max_epochs", words="--trainer.max_epochs needs a value"),
    case(*PRINT, "--set", "model.cl_weight", words=("--set needs KEY=VALUE", "--set model.cl_weight=0.3")),
    case(*PRINT, "--trainer.devices", "0", words=("trainer.devices = 0", ">= 1", '"auto"')),
    case("train", "--data", "tiny", "--trainer.devices", "0", words="trainer.devices = 0"),
    case(*PRINT, "--trainer.devices", "-2", words="trainer.devices = -2"),
    case(*PRINT, "--trainer.devices", "[]", words="trainer.devices = []"),
    case(*PRINT, "--trainer.devices", "'0'", words="trainer.devices = 0"),
    case(
        *PRINT,
        "--variant",
        "v.yaml",
        words=("v.yaml", "'align' is a model setting", "model: {align: ...}"),
        setup=files(**{"v.yaml": "description: no align\nalign: none\n"}),
    ),
    case(
        *PRINT,
        "--variant",
        "vars/w.yaml",
        words=("optimizer = {'lr': 0.1}", "class_path", "optim.lr"),
        setup=files(**{"vars__w.yaml": "optimizer: {lr: 0.1}\n"}),
    ),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_config(c: Case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_case(c, tmp_path)


@pytest.mark.parametrize(
    "args, wrong",
    [
        ((*PRINT, "--trainer.max_epochs"), "data.source"),  # the next setting is not taken as the value
        ((*PRINT, "--set", "model.cl_weight"), "n_live_authors"),  # not a simulator key in a train message
        (("train", "--data", "tiny", "--trainer.devices", "0"), "--config cpu"),  # not blamed on the machine
        ((*PRINT, "--model.cl_weight", "inf"), "NaN"),
    ],
)
def test_the_message_names_the_real_cause(args, wrong, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, list(args))
    assert r.exit_code == 2 and wrong not in r.output, r.output


def test_the_edges_that_are_fine(tmp_path, monkeypatch):
    """The largest cut-off, devices -1 / "auto" / a list, a run name with dots, --set of the simulator keep working."""
    monkeypatch.chdir(tmp_path)
    for extra in (
        ["--model.video_frequency.cutoff", "26", "--model.live_frequency.cutoff", "26"],
        ["--data.history_len", "10", "--model.live_frequency.cutoff", "6"],
        ["--trainer.devices", "-1"],
        ["--trainer.devices", "auto"],
        ["--trainer.devices", "[0, 1]"],
        ["--trainer.devices", "'0,1'"],
        ["--fit.name", "my.run-1"],
        ["--model.head.dropout", "0.5", "--model.head.tower_dims", "[]"],
        ["--model.head.task_experts", "0"],
        ["--model.cl_weight", "-0"],
    ):
        r = runner.invoke(app, [*PRINT, *extra])
        assert r.exit_code == 0, (extra, r.output)
    r = runner.invoke(app, [*PRINT, "--model.head.dropout", "0.5", "--model.head.tower_dims", "[32]"])
    assert "dropout: 0.5" in r.output and "- 32" in r.output


def test_an_empty_farm_home_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_dataset()(tmp_path, None)
    before = _snapshot(tmp_path)
    r = runner.invoke(app, ["data", "build", "d"], env={"FARM_HOME": ""})
    assert r.exit_code == 2, r.output
    assert "FARM_HOME is set but empty" in r.output and "unset FARM_HOME" in r.output
    assert "Traceback" not in r.output and _snapshot(tmp_path) == before


def test_variant_sections_are_the_run_config_sections():
    from farmcli.config import RunConfig
    from farmcli.variants import SECTIONS

    assert set(SECTIONS) == {f.name for f in dataclasses.fields(RunConfig)} - {"variant", "ckpt_path"}


def test_trainer_settings_match_the_installed_lightning():
    """farmcli/trainer_settings.py (the Trainer's signature without Lightning) is current: same names, defaults and
    types. After a Lightning upgrade: python tools/write_trainer_settings.py."""
    import inspect
    import typing

    import lightning as L
    from tools.write_trainer_settings import _annotation_source

    from farmcli import trainer_settings
    from farmcli.config import TRAINER_SKIP

    if L.__version__ != trainer_settings.LIGHTNING_VERSION:  # the config then reads Lightning's own signature
        pytest.skip(
            f"trainer_settings was made from Lightning {trainer_settings.LIGHTNING_VERSION}, not {L.__version__}"
        )
    cached = inspect.signature(trainer_settings.trainer).parameters
    real = {
        k: p
        for k, p in inspect.signature(L.Trainer.__init__).parameters.items()
        if k != "self" and k not in TRAINER_SKIP
    }
    assert list(cached) == list(real)
    hints = typing.get_type_hints(trainer_settings.trainer)
    names = vars(trainer_settings)
    for k, p in real.items():
        assert cached[k].default == p.default, k
        assert hints[k] == eval(_annotation_source(p.annotation), names), k


def test_a_config_error_is_answered_before_the_heavy_imports(tmp_path):
    """A bad setting is named before torch or Lightning is imported (seconds on a busy machine)."""
    code = (
        "import sys\n"
        "from farmcli.cli import app\n"
        "try:\n"
        "    app(['train', '--data', 'tiny', '--model.cl_weight', '-1'], prog_name='farm')\n"
        "except SystemExit as e:\n"
        "    heavy = sorted(m for m in ('torch', 'lightning') if m in sys.modules)\n"
        "    print('exit', e.code, 'heavy', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "model.cl_weight = -1" in r.stderr, r.stderr
    assert "exit 2 heavy []" in r.stdout, r.stdout + r.stderr
    assert not any(Path(tmp_path).iterdir())


def test_another_lightning_reads_its_own_trainer_signature(monkeypatch):
    """The cached signature is used only with the Lightning it was made from; another one is read itself."""
    from farmcli import config, trainer_settings
    from farmcli.errors import UserError

    monkeypatch.setattr(trainer_settings, "LIGHTNING_VERSION", "0.0.0")
    config.parser.cache_clear()
    try:
        with pytest.raises(UserError, match="trainer.max_epochs"):
            config.resolve(overrides={"trainer": {"max_epochs": "many"}})
        assert config.resolve(overrides={"trainer": {"max_epochs": 3}}).trainer["max_epochs"] == 3
    finally:
        config.parser.cache_clear()
