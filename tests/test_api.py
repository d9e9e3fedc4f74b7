"""The Python API: docs/API.md's example runs as written, and the package exports what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"


def test_the_entry_points_import_light_and_are_functions():
    code = (
        "import sys, farmcli; assert 'torch' not in sys.modules, 'import farmcli loads torch';"
        "from farmcli import train, evaluate, predict, export, synth, build, resolve, FARM, FarmModule, "
        "FarmDataModule, SampleStore, UserError;"
        "import farmcli.training, farmcli.evaluation;"  # the modules behind them do not shadow the functions
        "assert callable(farmcli.train) and callable(farmcli.evaluate) and not isinstance(farmcli.train, type(sys));"
        "assert all(f.__doc__ for f in (train, evaluate, predict, export, synth, build, resolve))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_the_api_page_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    r = subprocess.run([sys.executable, "-c", "\n".join(blocks)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "runs" / "api-demo" / "eval-test.json").is_file()
    assert "p_click" in r.stdout
    loss = float(re.search(r"step 4: loss ([\d.]+)", r.stdout).group(1))
    assert 0 < loss < 20


def test_farm_alone_starts_at_the_label_rates():
    import torch

    from farmcli import FARM
    from tests.model.helpers import VOCAB, random_batch, tiny_config

    rates = [0.3, 0.2, 0.1, 0.05, 0.02, 0.01]
    torch.manual_seed(0)
    model = FARM(tiny_config("farm"), VOCAB, label_rates=rates)
    with torch.no_grad():
        p = torch.sigmoid(model(random_batch(512, 12, seed=1), with_cl=False).logits).mean(0)
    assert torch.allclose(p, torch.tensor(rates), atol=0.05), p
