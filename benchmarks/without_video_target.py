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

_init = farm.FARM.__init__


def _init_without_video_target(self, *args, **kwargs) -> None:
    _init(self, *args, **kwargs)
    self.video_target.out.weight.data.zero_()
    self.video_target.out.weight.requires_grad_(False)


farm.FARM.__init__ = _init_without_video_target  # type: ignore[method-assign]

if __name__ == "__main__":
    quality_sweep.main()
