"""quality_sweep.py with eq. 11's video target attention switched off (F^_video = 0 in every variant).

A question about the data, not a variant: is what the fuse (eq. 16-17) reads from the video history already
read by the candidate's own target attention over it (eq. 11)? If the fuse adds to a model without that
attention but not to FARM, the two carry the same information on this data (docs/QUALITY.md, issue 27).
The attention's output projection is zeroed and frozen after the model is built; everything else is
quality_sweep.py's, with the same arguments:

    python benchmarks/without_video_target.py --data default --seeds 0 --epochs 2 --out q.jsonl no-cpf farm
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import quality_sweep  # noqa: E402
from farmcli.model import farm  # noqa: E402


def switch_off_video_target(model: farm.FARM) -> None:
    """F^_video = 0 from here on: eq. 11's video output projection zeroed and out of training (Adam skips it)."""
    model.video_target.out.weight.data.zero_()
    model.video_target.out.weight.requires_grad_(False)


def patch() -> None:
    """Every FARM built after this call has eq. 11's video attention switched off."""
    build = farm.FARM.__init__

    def build_without_video_target(self, *args, **kwargs) -> None:
        build(self, *args, **kwargs)
        switch_off_video_target(self)

    farm.FARM.__init__ = build_without_video_target  # type: ignore[method-assign]


if __name__ == "__main__":
    patch()
    quality_sweep.main()
