"""Research beside the library: the experiment scripts behind docs/notebook/QUALITY.md and the components only they use.

Not part of the installed package (pyproject's setuptools find takes ``src/`` only). The scripts put the
repository root on ``sys.path`` themselves; ``farm`` and the tests need it there (``PYTHONPATH=.`` or ``python
-m farmcli`` from the root) to load ``experiments.plugins``. README.md in this folder lists what each answered.
"""
