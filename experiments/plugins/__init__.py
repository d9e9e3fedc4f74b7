"""Research-only FARM components, registered as any plugin is (``farmcli.registry.register``) when imported.

Load one by its class path, which imports it (``--model.fuse experiments.plugins.fuse_null.
NullEventCrossAttentionFuse``), or import this package first and name it (``cross_attention_null``,
``dft_window``). ``farm`` finds ``cross_attention_null`` here by itself when ``experiments`` is importable
(farmcli.registry, moved names). None of these is a default or a variant of the library.
"""

from experiments.plugins import fuse_null, window_gate

__all__ = ["fuse_null", "window_gate"]
