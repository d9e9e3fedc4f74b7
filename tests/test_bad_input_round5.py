"""Bad input, round 5 (issue 36): Lightning's, the scheduler's and the callbacks' arguments are checked where the
rest of the config is, before any data is read; empty strings are refused where a path or a name is expected; a
component that is not one is named. Each case: exit 2, the words of the message, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmcli.cli import app

runner = CliRunner()
TINY = str(Path(__file__).with_name("tiny-model.yaml"))

CASES = [
    # row 1: what Lightning cannot run
    (["--trainer.accelerator", "bogus"], ["trainer.accelerator = 'bogus'", "Known: auto, gpu, cpu"]),
    (["--trainer.accelerator", "tpu"], ["trainer.accelerator='tpu'", "torch_xla"]),
    (["--trainer.strategy", "bogus"], ["trainer.strategy = 'bogus'", "ddp"]),
    (["--trainer.strategy", "dp"], ["trainer.strategy = 'dp'", "Did you mean 'ddp'"]),
    (["--trainer.strategy", "fsdp"], ["trainer.strategy='fsdp'", "GPU", "drop --trainer.strategy fsdp"]),
    (["--trainer.devices", "-1"], ["trainer.devices=-1", "int > 0"]),
    (["--trainer.num_nodes", "0"], ["trainer.num_nodes = 0", ">= 1"]),
    (["--trainer.barebones", "true"], ["trainer.barebones", "Leave it out"]),
    # row 2: zero where Lightning or the scheduler divides
    (["--trainer.check_val_every_n_epoch", "0"], ["trainer.check_val_every_n_epoch = 0", ">= 1"]),
    (["--trainer.accumulate_grad_batches", "0"], ["trainer.accumulate_grad_batches = 0", ">= 1"]),
    (["--trainer.val_check_interval", "0"], ["trainer.val_check_interval = 0", "(0, 1]"]),
    (["--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "0"], ["StepLR", "step_size=0", "ZeroDivisionError"]),
    (["--lr_scheduler", "CosineAnnealingLR", "--lr_scheduler.T_max", "0"], ["CosineAnnealingLR", "T_max=0"]),
    (["--lr_scheduler", "ExponentialLR", "--lr_scheduler.gamma", "nan"], ["ExponentialLR", "lr_scheduler.gamma = nan"]),
    # row 3: nothing to train
    (["--trainer.max_steps", "0"], ["trainer.max_steps = 0", "nothing to train"]),
    (["--trainer.limit_train_batches", "0"], ["trainer.limit_train_batches = 0", "nothing to train"]),
    (["--trainer.limit_val_batches", "0"], ["trainer.limit_val_batches = 0", "validation"]),
    # row 4: callback argument values
    (
        ["--trainer.callbacks", "LearningRateMonitor", "--trainer.callbacks.logging_interval", "fortnight"],
        ["LearningRateMonitor", "trainer.callbacks.logging_interval = 'fortnight'", "'step', 'epoch'"],
    ),
    # rows 5 and 12: empty strings
    (["--fit.monitor", ""], ["fit.monitor is an empty string"]),
    (["--fit.runs_dir", ""], ["fit.runs_dir is an empty string"]),
    (["--data.cache_dir", ""], ["data.cache_dir is an empty string"]),
    (["--fit.name", ""], ["fit.name = ''"]),
    (["--variant", ""], ["--variant is an empty string"]),
    # row 6 and 20: not a component of the slot
    (["--model.fuse", "os.path.join"], ["model.fuse = os.path.join is not a fuse component", "video_dim"]),
    (["--model.fuse", "torch.nn.Linear"], ["model.fuse = torch.nn.Linear is not a fuse component", "in_features"]),
    # row 11: unbounded or meaningless values
    (["--data.num_workers", "1000"], ["data.num_workers = 1000", "CPU cores"]),
    (["--trainer.gradient_clip_val", "-1"], ["trainer.gradient_clip_val = -1", ">= 0"]),
    (["--trainer.log_every_n_steps", "-1"], ["trainer.log_every_n_steps = -1", ">= 1"]),
    (["--trainer.num_sanity_val_steps", "-2"], ["trainer.num_sanity_val_steps = -2", ">= -1"]),
    (["--lr_scheduler", "ExponentialLR", "--lr_scheduler.gamma", "-5"], ["ExponentialLR", "learning rate -0.005"]),
    # row 18f: more epochs at least than at most
    (["--trainer.min_epochs", "5", "--trainer.max_epochs", "1"], ["trainer.min_epochs = 5", "max_epochs = 1"]),
    # row 19: messages that name the real cause (no "use --config cpu" where no GPU is involved)
    (["--trainer.profiler", "bogus"], ["trainer.profiler = 'bogus'", "simple, advanced"]),
    (["--trainer.max_time", "bogus"], ["trainer.max_time = 'bogus'", "DD:HH:MM:SS"]),
    (["--trainer.limit_train_batches", "1.5"], ["trainer.limit_train_batches = 1.5", "at most 1.0", "(e.g. 2)"]),
    (["--trainer.limit_train_batches", "-1"], ["trainer.limit_train_batches = -1", ">= 0"]),
    (["--trainer.fast_dev_run", "-1"], ["trainer.fast_dev_run = -1", ">= 0"]),
    (["--trainer.val_check_interval", "5.5"], ["trainer.val_check_interval = 5.5", "at most 1.0"]),
    # row 2: a scheduler that divides by an argument names it
    (["--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "0"], ["StepLR", "It divides by step_size: give 1"]),
    # row 11: a head that would run for hours
    (["--model.head.levels", "1000"], ["model.head.levels = 1000", "<= 8"]),
]


@pytest.mark.parametrize("args, words", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_setting_that_cannot_run_is_named_before_any_work(args, words, tmp_path):
    r = runner.invoke(app, ["train", "--data", "tiny", "--config", TINY, "--fit.runs_dir", str(tmp_path), *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, (w, r.output)
    assert "--config cpu" not in r.output or "GPU" in r.output
    assert not any(tmp_path.iterdir())  # no run directory, nothing half-written


def test_a_callback_argument_from_a_config_file_shows_the_value_given(tmp_path):
    """Row 4 from YAML: the message showed `logging_interval = None` and 'expected ... a string or list'."""
    cfg = tmp_path / "cb.yaml"
    cfg.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.LearningRateMonitor\n"
        "      init_args:\n        logging_interval: fortnight\n"
    )
    runs = tmp_path / "runs"
    r = runner.invoke(
        app, ["train", "--data", "tiny", "--config", TINY, "--config", str(cfg), "--fit.runs_dir", str(runs)]
    )
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "trainer.callbacks.logging_interval = 'fortnight': expected null or one of 'step', 'epoch'" in text, text
    assert "Traceback" not in r.output and not runs.exists()


def test_a_yaml_anchor_that_holds_itself_is_named(tmp_path):
    """Row 7: `a: &a [*a]` made a RecursionError; an anchor shared by two aliases stays fine."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: &a [*a]\n")
    r = runner.invoke(app, ["train", "--config", str(bad), "--print-config"])
    assert r.exit_code == 2 and "anchor refers to itself" in r.output and "Traceback" not in r.output, r.output
    shared = tmp_path / "shared.yaml"
    shared.write_text("trainer: &t {max_epochs: 2}\n")
    r = runner.invoke(app, ["train", "--config", str(shared), "--print-config"])
    assert r.exit_code == 0, r.output


def test_a_checkpoint_write_that_fails_keeps_the_previous_one_whole(tmp_path, monkeypatch):
    """Row 18b: Lightning wrote last.ckpt in place, so a full disk cut the last good checkpoint; farm writes each
    checkpoint beside its name and renames it into place."""
    import torch

    from farmcli.training import _atomic_checkpoint_io

    io = _atomic_checkpoint_io()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, last)
    before = last.read_bytes()

    def full_disk(checkpoint, path):
        Path(path).write_bytes(b"cut sh")  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    monkeypatch.setitem(TorchCheckpointIO.save_checkpoint.__globals__, "_atomic_save", full_disk)
    with pytest.raises(OSError):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, last)
    assert last.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
