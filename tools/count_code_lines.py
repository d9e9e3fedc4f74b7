"""Count the hand-written configuration code (issue 34's measure): code lines, without blank, comment or
docstring lines, of the layering, class and signature functions; the rules and messages beside them.

    python tools/count_code_lines.py            # the configuration's figures
    python tools/count_code_lines.py FILE[:NAME,NAME...] ...   # any files or top-level names
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "farmcli"
COUNTED = [
    "config.py:parser,_class_base,_classes,resolve,_nested,pairs_of,_slot_spec,_ours,_slot_layer,_is_slot,validate,"
    "with_component_defaults",
    "components.py:check,as_list,_changed,_defaults,resolve_class,instantiate",
    "model/params.py:_parser,check,plain",
    "cli/_common.py:dotted_overrides",
]
APART = ["config_rules.py", "config_messages.py", "components.py:_try"]


def _docstrings(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for stmt in body:
            if (
                isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def code_lines(path: Path, names: set[str] | None = None) -> int:
    """Code lines of ``path``, or of its top-level functions, classes and assignments named in ``names``."""
    text = path.read_text()
    tree = ast.parse(text)
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    code = {
        n
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type not in skip
        for n in range(tok.start[0], tok.end[0] + 1)
    } - _docstrings(tree)
    if names is None:
        return len(code)
    spans: set[int] = set()
    for node in tree.body:
        named = getattr(node, "name", None) in names or (
            isinstance(node, ast.Assign) and any(getattr(t, "id", None) in names for t in node.targets)
        )
        if named:
            start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            spans.update(range(start, (node.end_lineno or node.lineno) + 1))
    return len(code & spans)


def report(items: list[str], root: Path) -> int:
    total = 0
    for item in items:
        path, _, names = item.partition(":")
        n = code_lines(root / path, set(names.split(",")) if names else None)
        total += n
        print(f"{n:5d}  {item}")
    print(f"{total:5d}  total")
    return total


if __name__ == "__main__":
    if sys.argv[1:]:
        report(sys.argv[1:], Path.cwd())
    else:
        print("layering, class and signature code:")
        report(COUNTED, SRC)
        print("rules and messages (farm's own):")
        report(APART, SRC)
