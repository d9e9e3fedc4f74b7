"""farmcli's version, in a module of its own: the package's modules read it from here, because importing it from
``farmcli`` itself, whose lazy exports name most of the package, closes an import cycle (tests/test_imports.py)."""

__version__ = "0.1.0"
