"""A small study on the tiny preset, shared by the tune tests."""

from __future__ import annotations

from pathlib import Path

from farmcli.tune.space import parse_space
from farmcli.tune.study import TuneSettings

TINY = str(Path(__file__).parents[1] / "tiny-model.yaml")


def tiny_settings(epochs: int = 1, **kw) -> TuneSettings:
    """The base variant on tiny over two learning rates, ``epochs`` each, unpruned; ``kw`` replaces any field."""
    base = dict(
        variant="base",
        data="tiny",
        space=parse_space(["optim.lr=0.001,0.003"]),
        config_files=[TINY],
        overrides=[f"trainer.max_epochs={epochs}", "data.batch_size=2048"],
        prune=False,
    )
    base.update(kw)
    return TuneSettings(**base)
