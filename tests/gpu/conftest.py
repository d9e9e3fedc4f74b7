"""tests/gpu: checks that need CUDA. Where torch sees no CUDA device every test here is collected and skipped
(before any fixture runs, so nothing trains); `benchmarks/gpu_check.sh` runs them on a machine with a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False")
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(skip)
