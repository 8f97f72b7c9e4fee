"""The shape of the code: a small student package, imports that run one way, one error family.

These checks read the source (ast), so they see every import, also the ones inside functions that
hold an import circle together at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("helpers", "sdserver", "course")
HELPERS_MAX_LINES = 3500  # issue 12's target, in lines of code (see _code_lines)
HELPERS_NOW = 4108  # physical lines, blank ones included; see test_helpers_does_not_grow
FILE_MAX_LINES = 400
# The imports that cross between the three packages on purpose, each the one of its kind:
# helpers starts the kit's server when no A1111 answers; `python -m helpers` is kept as a pass-through to
# the course command line; `python -m course serve` starts the server; the grader starts its preview server.
ALLOWED_CROSSINGS = {("helpers.backends", "sdserver"), ("helpers.__main__", "course.__main__"),
                     ("course.__main__", "sdserver.__main__"), ("course.grading", "sdserver")}


def _allowed(name: str, target: str) -> bool:
    return any(name == source and (target == allowed or target.startswith(allowed + "."))
               for source, allowed in ALLOWED_CROSSINGS)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The kit modules that ``name`` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            # The longest known module that the dotted name starts with.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_the_kits_modules():
    assert _cycles(_graph()) == []


def test_helpers_imports_the_server_only_to_start_it():
    offenders = sorted(f"{name} -> {target}" for name, targets in _graph().items() if name.startswith("helpers")
                       for target in targets if not target.startswith("helpers") and not _allowed(name, target))
    assert offenders == []


def test_the_server_and_course_tools_never_import_each_other():
    graph = _graph()
    crossing = sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                      if name.split(".")[0] in ("sdserver", "course") and target.split(".")[0] not in
                      (name.split(".")[0], "helpers") and not _allowed(name, target))
    assert crossing == []


def test_no_module_level_getattr_re_exports():
    offenders = [name for name, path in _modules().items()
                 if any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                        for node in ast.parse(path.read_text(encoding="utf-8")).body)]
    assert offenders == []


def _helpers_sizes() -> dict[str, int]:
    return {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
            for path in (ROOT / "helpers").rglob("*.py")}


def test_no_file_of_helpers_is_over_400_lines():
    assert {name: n for name, n in _helpers_sizes().items() if n > FILE_MAX_LINES} == {}


def test_helpers_does_not_grow():
    """A ratchet on physical lines: lower HELPERS_NOW whenever helpers/ shrinks."""
    assert sum(_helpers_sizes().values()) <= HELPERS_NOW


def _code_lines(path: Path) -> int:
    """Lines that hold code, as cloc --docstring-as-code counts them: blank and comment-only lines are
    left out (also blank lines inside a docstring), docstrings are counted (they carry the examples the notebooks
    rely on)."""
    import io
    import tokenize

    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    text = path.read_text(encoding="utf-8")
    blank = {number for number, line in enumerate(text.splitlines(), 1) if not line.strip()}
    rows: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in skip:
            rows.update(range(token.start[0], token.end[0] + 1))
    return len(rows - blank)


def test_code_lines_count_what_cloc_counts(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Doc\n\nstring."""\n\n# a comment\nx = (1,\n     2)  # trailing\n\n\ndef f():\n    return x\n')
    assert _code_lines(sample) == 2 + 2 + 2  # the docstring's 2 written lines, x's 2, f's 2


def test_helpers_is_small_enough_to_read():
    code = {path.relative_to(ROOT).as_posix(): _code_lines(path) for path in (ROOT / "helpers").rglob("*.py")}
    assert sum(code.values()) <= HELPERS_MAX_LINES, sorted(code.items(), key=lambda item: -item[1])[:5]


def _module_map() -> list[str]:
    """The modules helpers/__init__.py's docstring lists, in its order."""
    import re

    import helpers

    return re.findall(r"^\s+(\w+)\.py\s", helpers.__doc__ or "", re.M)


def test_the_package_docstring_is_the_module_map():
    listed = {path.stem for path in (ROOT / "helpers").glob("*.py") if path.stem != "__init__"}
    assert sorted(set(_module_map())) == sorted(listed)


def test_the_module_map_reads_top_to_bottom():
    """Each module imports only modules listed above it, so the package reads in the map's order."""
    order = {f"helpers.{stem}": position for position, stem in enumerate(_module_map())}
    backwards = sorted(f"{name} -> {target}" for name, targets in _graph().items() if name in order
                       for target in targets if target in order and order[target] > order[name])
    assert backwards == []


def _exception_classes() -> list[tuple[str, str]]:
    """(module, class) for every class of the kit whose name ends in Error, Unavailable or Interrupted."""
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Unavailable")):
                found.append((name, node.name))
    return found


@pytest.mark.parametrize("module, cls", _exception_classes())
def test_every_error_of_the_kit_derives_from_kit_error(module, cls):
    import importlib

    from helpers.errors import KitError

    assert issubclass(getattr(importlib.import_module(module), cls), KitError)
