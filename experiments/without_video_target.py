"""quality_sweep.py with eq. 11's video target attention switched off (F^_video = 0 in every variant).

A question about the data, not a variant: is what the fuse (eq. 16-17) reads from the video history already
read by the candidate's own target attention over it (eq. 11)? If the fuse adds to a model without that
attention but not to FARM, the two carry the same information on this data (docs/notebook/QUALITY.md, "Why the fuse
cannot pull its weight on the simulator"; issue 27). A Lightning callback of this script's own training call
zeroes the attention's output projection and freezes it in each model it trains, before the optimiser is made;
no class is changed. Everything else is quality_sweep.py's, with the same arguments:

    python experiments/without_video_target.py --data default --seeds 0 --epochs 2 --out q.jsonl no-cpf farm
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # the repository root: experiments.* importable when run as a script
    sys.path.insert(0, ROOT)


def switch_off_video_target(model: Any) -> None:
    """F^_video = 0 from here on: eq. 11's video output projection (a FARM's ``video_target.out``, no bias)
    zeroed and out of training (its gradient stays None, so Adam never steps it)."""
    weight = model.video_target.out.weight
    weight.data.zero_()
    weight.requires_grad_(False)


def video_target_off() -> Any:
    """A Lightning callback that switches eq. 11's video attention off in the FarmModule it trains, at ``setup``:
    after the model is built, before Lightning asks it for its optimiser."""
    import lightning as L

    class VideoTargetOff(L.Callback):
        def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
            switch_off_video_target(pl_module.farm)

    return VideoTargetOff()


def main(argv: Sequence[str] | None = None, extra_callbacks: Sequence[Any] = ()) -> None:
    from experiments import quality_sweep

    args = quality_sweep.parse_args(argv, description=__doc__)
    quality_sweep.run(args, extra_callbacks=[video_target_off(), *extra_callbacks])


if __name__ == "__main__":
    main()
