"""The CPU backend (``fit.backend: cpu``, model/backends.py): the reference blocks with a 2-core CPU's speed-ups,
same parameters, tested equal forward and backward (tests/model/cpu/); options.py switches each speed-up."""

from farmcli.model.cpu.farm import forward

__all__ = ["forward"]
