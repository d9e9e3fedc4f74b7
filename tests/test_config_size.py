"""Issue 34's measure of the hand-written configuration code: every function of the configuration modules is
either counted (layering, class and signature code, at most 250 code lines) or named as a rule or a message."""

from __future__ import annotations

import ast

from tools.count_code_lines import APART, COUNTED, SRC, code_lines


def _named(items: list[str]) -> dict[str, set[str] | None]:
    out: dict[str, set[str] | None] = {}
    for item in items:
        path, _, names = item.partition(":")
        out[path] = None if not names else {*(out.get(path) or set()), *names.split(",")}
    return out


def test_every_function_of_the_configuration_is_counted_or_named_apart():
    counted, apart = _named(COUNTED), _named(APART)
    for path in ("config.py", "components.py", "model/params.py"):
        tree = ast.parse((SRC / path).read_text())
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        covered = (counted.get(path) or set()) | (apart.get(path) or set())
        assert functions <= covered, f"{path}: {sorted(functions - covered)} neither counted nor named apart"


def test_the_layering_class_and_signature_code_is_at_most_250_lines():
    total = 0
    for path, names in _named(COUNTED).items():
        total += code_lines(SRC / path, names)
    assert 100 < total <= 250, total
