import platform

import pytest

from farmcli import allocator


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the settings exist only in glibc"
)
def test_glibc_accepts_every_setting():
    # mallopt answers 0 to a value out of its range (an mmap threshold above glibc's ceiling, say)
    allocator.keep_freed_memory.cache_clear()
    assert allocator.keep_freed_memory() is True


def test_the_train_command_applies_it_and_the_library_does_not(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from farmcli.cli import app
    from farmcli.config import resolve
    from farmcli.sources import sample_store
    from farmcli.training import TrainResult, build_module

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    cfg = resolve(overrides={"data": {"source": "tiny"}})
    build_module(cfg, sample_store(cfg.data))
    assert calls == []  # a notebook that imports farmcli keeps its malloc as it is
    monkeypatch.setattr("farmcli.training.train", lambda *a, **k: TrainResult(tmp_path, {}))  # not a training
    r = CliRunner().invoke(app, ["train", "--data", "tiny", "--fit.runs_dir", str(tmp_path)])
    assert calls == [1], r.output
