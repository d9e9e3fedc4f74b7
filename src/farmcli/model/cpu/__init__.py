"""The CPU backend (``fit.backend: cpu``, model/backends.py): FARM's model with a 2-core CPU's speed-ups.

Every piece here computes what a reference block computes (model/farm.py, layers.py, embed.py, frequency.py,
heads/) with the same parameters, tested equal forward and backward (tests/model/cpu/); options.py switches
each speed-up for the benchmarks.
"""

from farmcli.model.cpu.farm import forward

__all__ = ["forward"]
