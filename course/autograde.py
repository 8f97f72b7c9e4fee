"""Checks a student cannot fake: what :mod:`course.grading` runs, and how it reads a pass.

A grade comes from the kit's own checks, run by the grader, never from text the notebook printed or saved.

**Matching** (:func:`match`). A student's file is matched to the kit's notebook (the solution versions in
``notebooks/``) by content: the nbformat cell ids it shares with each of them (Jupyter keeps a cell's id when it
is edited, moved or the file renamed). The file name does not matter: ``06_full_pipeline (1).ipynb`` or
``my work.ipynb`` grade the same. A file that shares too few ids with every kit notebook earns nothing, and the
feedback says so.

**Restoring the kit's cells** (:func:`build`), as nbgrader's ``OverwriteCells`` does. The notebook that runs is
the kit's reference notebook, cell by cell: every cell without ``### BEGIN SOLUTION`` (setup, tests, check calls)
is the kit's own copy, so an edited or deleted check changes nothing. Each solution cell's source is the
student's cell with the same id; a missing one is the kit's stub (``raise NotImplementedError()``: not done).
Cells the student added (experiments, helper functions, imports) stay where they were, after the kit cell
that came before them in the student's file: an honest solution may call a helper defined in a cell of its
own, and dropping those cells would fail it. They pass the same static checks as the solution cells. Added
Markdown cells are dropped (nothing to run). Every saved output, every tag (``skip-execution``,
``raises-exception``) and all other metadata are dropped: the grader sets each cell's metadata itself.

**Reading a pass** (:func:`prepare`, :func:`read_cells`). Under the grader (``KIT_GRADING=1``) ``check()``
raises :class:`course.exercises.ExerciseNotPassed` when an exercise is not done or not right, so a check cell's
*execution status* says pass or fail. The exercise of each check cell comes from the kit's source (the first
argument of its ``check("name", ...)`` call), never from a printed line. A kit cell with several checks, or
with code after its check, is cut into one cell per check (and cells for the code between), so each check has
its own status; a failed check still hands the kit's ``reference`` to the cells below before its cell raises
(``course.exercises`` does that under any grader, nbgrader's too), so a later exercise is graded on its own,
not on an earlier one. The status is the kernel's ``execute_reply`` for that cell, which
:mod:`course.grading_worker` (the process that drives the kernel, not the student's code) records; a check cell
that ran without an error passes only if it did not also print that check's "not done"/"not right" line (which
happens only when the grading switch was turned off from inside). Only the kit's exercise names count, each
once per notebook; an exercise whose check cell never ran is "not reached".

**Static checks** (:func:`static_checks`), with ``ast``, of every student cell (solution and added cells):

* handing the step to the kit's own version of it. ``data/grading/kit_steps.json`` lists, per exercise, the kit
  callables that do that step (derived from each check call's ``reference=``/``uses=``); the name passed as
  ``reference=`` is always on the list. The exercise's code is the function the student defines under that
  name (in any cell; a later definition too) and every function, class or import of theirs it uses, followed
  through their other helpers. If that code names one of the listed callables (``scorer.similarity``,
  ``run_pipeline``, ``getattr(scorer, "similarity")``, an import of it), the exercise does not pass, and the
  feedback names the kit function it used.
* tampering with the grading: rebinding ``check``/``report`` or, before the check that reads it, a name the kit's
  checks read (``test_*``, the data and modules the tests use, a builtin such as ``isinstance``); setting an
  attribute of such a name or of a module; touching ``course.exercises``, ``sys.modules``, ``builtins``,
  ``importlib``, ``__import__``, ``exec``/``eval``/``compile``, frames and ``__globals__``/``__code__``,
  ``os._exit``/``os.kill``, the environment (``KIT_GRADING``), ``globals()``/``vars()``/``locals()`` stores,
  ``setattr``/``delattr``, ``get_ipython`` and magics other than harmless ones. Such a notebook is not run:
  its exercises "need a manual look" (0 points) and the feedback says which line of which cell and why.

What this does not do: it cannot tell a student's own work from work copied from another student, and the
static checks are a fence, not a proof (a determined student can hide a call from ``ast``: README, Instructor
guide, "what the kit does not protect against").
"""

from __future__ import annotations

import ast
import builtins
import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from helpers.config import KIT_ROOT

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
KIT_NOTEBOOKS = KIT_ROOT / "notebooks"
KIT_STEPS = KIT_ROOT / "data" / "grading" / "kit_steps.json"
MIN_SHARED = 0.3  # share of a kit notebook's cell ids a file must have to be that notebook
DONE, NOT_DONE, NOT_RIGHT, NOT_REACHED, MANUAL = (
    "done", "not done yet", "not right yet", "not reached", "needs a manual look")
MAX_DETAIL = 200
STUB = "raise NotImplementedError()"


# --- Reading notebooks -----------------------------------------------------------------------------

def read(source: bytes | str | Path):
    """A notebook (nbformat v4) from bytes, text or a path; ValueError when it is not one."""
    import nbformat

    try:
        if isinstance(source, Path):
            source = source.read_bytes()
        text = source.decode("utf-8") if isinstance(source, bytes) else source
        return nbformat.reads(text, as_version=4)
    except Exception as err:  # noqa: BLE001 - not UTF-8, not JSON, not a notebook
        raise ValueError("the file is not a readable notebook") from err


def is_solution(cell) -> bool:
    return cell.cell_type == "code" and any(line.strip() == BEGIN for line in cell.source.splitlines())


def stub(source: str) -> str:
    """The student version of a solution cell: each solution block becomes ``raise NotImplementedError()``."""
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + STUB)
        elif line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _parse(source: str) -> ast.Module | None:
    """The cell as Python (IPython's magics turned into calls, as the kernel does); None when it does not parse."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - IPython missing or a transform error: parse as plain Python
        pass
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _check_call(stmt) -> tuple[str, ast.Call] | None:
    """("name", call) for a top-level ``check("name", ...)`` or ``x = check("name", ...)``."""
    value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "check"
            and value.args and isinstance(value.args[0], ast.Constant) and isinstance(value.args[0].value, str)):
        return value.args[0].value, value
    return None


def check_names(nb) -> list[str]:
    """The exercises a (kit) notebook checks, in order, from its check calls."""
    names = []
    for cell in nb.cells:
        if cell.cell_type == "code" and not is_solution(cell):
            tree = _parse(cell.source)
            for stmt in tree.body if tree else []:
                found = _check_call(stmt)
                if found and found[0] not in names:
                    names.append(found[0])
    return names


# --- The kit's notebooks and matching --------------------------------------------------------------

@dataclass
class Kit:
    """The kit's reference notebooks: ``{key: notebook}``, the key being the file stem (``02_text_generation``)."""
    notebooks: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)  # exercise -> kit callables that do its step

    @classmethod
    def load(cls, folder: str | Path | None = None, steps: str | Path | None = None) -> Kit:
        folder = Path(folder) if folder else KIT_NOTEBOOKS
        notebooks = {path.stem: read(path) for path in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}
        if not notebooks:
            raise FileNotFoundError(f"No kit notebooks (NN_*.ipynb) in {folder}.")
        steps_path = Path(steps) if steps else KIT_STEPS
        table = json.loads(steps_path.read_text(encoding="utf-8")).get("exercises", {}) if steps_path.is_file() else {}
        return cls(notebooks, table)

    def exercises(self, key: str) -> list[str]:
        return check_names(self.notebooks[key])


def _ids(nb) -> set[str]:
    return {cell.get("id") for cell in nb.cells if cell.get("id")}


def match(nb, kit: Kit) -> str | None:
    """The key of the kit notebook this one is (the most shared cell ids, at least MIN_SHARED of the kit's), or None."""
    ids = _ids(nb)
    best, best_shared = None, 0
    for key, reference in kit.notebooks.items():
        theirs = _ids(reference)
        shared = len(ids & theirs)
        if shared > best_shared and shared >= max(1, MIN_SHARED * len(theirs)):
            best, best_shared = key, shared
    return best


# --- Building the notebook that runs ---------------------------------------------------------------

def _code_cell(source: str, cell_id: str, **grading):
    import nbformat

    cell = nbformat.v4.new_code_cell(source)
    cell["id"] = cell_id[:64]
    cell.metadata = {"grading": grading}
    return cell


def build(reference, student):
    """The kit's notebook ``reference`` with the student's solution cells and added code cells (see module doc).

    Each cell's ``metadata.grading`` says where it came from: ``origin`` "kit" or "student", ``label`` (how the
    feedback names it: the student's own code cell number, or "the kit's code cell N").
    """
    import nbformat

    kit_ids = _ids(reference)
    theirs: dict[str, object] = {}
    added: dict[str | None, list] = {}
    anchor, number = None, 0
    for cell in student.cells:
        number += cell.cell_type == "code"
        cell_id = cell.get("id")
        if cell_id in kit_ids and cell_id not in theirs:
            theirs[cell_id] = (cell, number)
            anchor = cell_id
        elif cell.cell_type == "code" and cell.source.strip():
            added.setdefault(anchor, []).append((cell, number))

    out = nbformat.v4.new_notebook()
    out.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}

    def add_student(cells_numbers, after: str):
        for k, (cell, num) in enumerate(cells_numbers):
            out.cells.append(_code_cell(cell.source, f"added-{after}-{k}", origin="student",
                                        label=f"code cell {num}"))

    add_student(added.get(None, []), "start")
    kit_number = 0
    for cell in reference.cells:
        if cell.cell_type != "code":
            if cell.get("id") in added:
                add_student(added[cell["id"]], cell["id"])
            continue
        kit_number += 1
        if is_solution(cell):
            mine = theirs.get(cell.get("id"))
            if mine and mine[0].cell_type == "code":
                out.cells.append(_code_cell(mine[0].source, cell["id"], origin="student", solution=True,
                                            label=f"code cell {mine[1]}"))
            else:
                out.cells.append(_code_cell(stub(cell.source), cell["id"], origin="student", solution=True,
                                            label=f"the stub of the kit's code cell {kit_number} (your cell is "
                                                  "missing)"))
        else:
            out.cells.append(_code_cell(cell.source, cell["id"], origin="kit",
                                        label=f"the kit's code cell {kit_number}"))
        if cell.get("id") in added:
            add_student(added[cell["id"]], cell["id"])
    return out


def _segments(source: str, tree: ast.Module) -> list[tuple[int, int, str | None]]:
    """(first line, end line, exercise or None) of each piece of a cell: one per check statement (with the code
    before it), the code between two checks, the code after the last."""
    lines = source.splitlines()
    pieces, start = [], 0
    for stmt in tree.body:
        found = _check_call(stmt)
        if not found:
            continue
        first = stmt.lineno - 1
        if pieces and "".join(lines[start:first]).strip():  # code between two checks: a cell of its own
            pieces.append((start, first, None))
            start = first
        pieces.append((start, stmt.end_lineno, found[0]))
        start = stmt.end_lineno
    if "".join(lines[start:]).strip():
        pieces.append((start, len(lines), None))
    return pieces


def prepare(nb):
    """The notebook as the worker runs it: check cells cut to one check each, each check marked with its exercise.

    Only cells whose ``metadata.grading.origin`` is not "student" are looked at (a built notebook: the kit's
    cells; a notebook that was not built: every cell). Returns a new notebook.
    """
    import nbformat

    out = nbformat.v4.new_notebook()
    out.metadata = copy.deepcopy(nb.metadata)
    number = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        number += 1
        grading = dict(cell.get("metadata", {}).get("grading", {}))
        grading.setdefault("label", f"code cell {number}")
        grading.setdefault("origin", "notebook")
        cell_id = cell.get("id") or f"cell-{number}"
        tree = None if grading["origin"] == "student" else _parse(cell.source)
        pieces = _segments(cell.source, tree) if tree else []
        if not any(piece[2] for piece in pieces):
            out.cells.append(_code_cell(cell.source, cell_id, **grading))
            continue
        lines = cell.source.splitlines()
        for k, (first, end, exercise) in enumerate(pieces):
            piece = lines[first:end]
            marks = dict(grading, **({"exercise": exercise} if exercise else {}))
            out.cells.append(_code_cell("\n".join(piece), f"{cell_id}-{k}" if len(pieces) > 1 else cell_id, **marks))
    return out


# --- Static checks ---------------------------------------------------------------------------------

PROTECTED = {"check", "report", "ExerciseNotPassed", "grading", "__builtins__"}
TAMPER_NAMES = {"exec": "exec", "eval": "eval", "compile": "compile", "__import__": "__import__",
                "setattr": "setattr", "delattr": "delattr", "get_ipython": "get_ipython", "globals": None,
                "vars": None, "locals": None, "breakpoint": "breakpoint"}
TAMPER_MODULES = ("builtins", "importlib", "ctypes", "gc", "course", "runpy", "code", "codeop", "ipykernel",
                  "jupyter_client", "nbclient")
TAMPER_ATTRS = {"_getframe", "f_globals", "f_locals", "f_back", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
                "ag_frame", "__globals__", "__code__", "__closure__", "__builtins__", "__subclasses__", "__dict__",
                "__setattr__", "__delattr__", "__defaults__", "__kwdefaults__", "modules", "settrace", "setprofile",
                "_exit", "kill", "killpg", "putenv", "unsetenv", "currentframe", "getouterframes", "getinnerframes",
                "get_referrers", "get_referents", "get_objects", "set_custom_exc", "KIT_GRADING"}
MODULE_ATTRS = {("inspect", "stack"), ("inspect", "trace"), ("os", "environ"), ("sys", "stdout"),
                ("sys", "stderr"), ("os", "abort"), ("os", "system")}
SAFE_MAGICS = {"matplotlib", "time", "timeit", "capture", "pip", "conda", "who", "whos", "pwd", "ls", "pinfo",
               "pinfo2", "precision", "history", "system", "getoutput", "config_inline"}
ALLOWED_FROM_EXERCISES = {"check", "report", "show_my_code", "statuses"}


def _root(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else f"?.{node.attr}"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
        base = _dotted(node.args[0])
        return f"{base or '?'}.{node.args[1].value}"
    return None


def _imports(tree) -> dict[str, str]:
    """{local name: full dotted name} of a module's top-level imports."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                found[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return found


def _bound(tree) -> list[tuple[str, ast.AST]]:
    """(name, node) for every name a cell binds at its top level, or through ``global`` in a function."""
    out = []
    globals_ = {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.append((node.id, node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append((node.name, node))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                out.append((alias.asname or alias.name.split(".")[0], node))
    top = set()
    for stmt in tree.body:
        for node in ast.walk(stmt):
            top.add(id(node))
    # A name bound inside a function is local unless declared global; at the top level, everything counts.
    local_scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                                                   ast.ClassDef, ast.ListComp, ast.SetComp,
                                                                   ast.DictComp, ast.GeneratorExp))]
    inner = {id(n) for scope in local_scopes for n in ast.walk(scope) if n is not scope}
    return [(name, node) for name, node in out if id(node) not in inner or name in globals_]


def _reads(tree) -> set[str]:
    """The global names a piece of code reads: every name it loads, less each function's own locals."""
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    found, inner = set(), set()
    for scope in [n for n in ast.walk(tree) if isinstance(n, scopes)]:
        nodes = list(ast.walk(scope))
        inner |= {id(n) for n in nodes}
        declared = {name for n in nodes if isinstance(n, ast.Global) for name in n.names}
        local = {a.arg for n in nodes if isinstance(n, ast.arg) for a in [n]}
        local |= {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
        local |= {n.name for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n is not scope}
        found |= {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                  and (n.id not in local or n.id in declared)}
    found |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
              and id(n) not in inner}
    return found


@dataclass
class Findings:
    tampering: list[str] = field(default_factory=list)   # why the notebook needs a manual look
    handoffs: dict[str, str] = field(default_factory=dict)  # exercise -> the kit callable it hands its step to


def _pattern_hit(pattern: str, candidates: set[str]) -> bool:
    wanted = pattern.split(".")
    star = wanted[0] == "*"
    if star:
        wanted = wanted[1:]
    for candidate in candidates:
        parts = candidate.split(".")
        starts = range(1, len(parts)) if star else range(1) if not candidate.startswith("?") else ()
        for start in starts:
            if parts[start:start + len(wanted)] == wanted:
                return True
    return False


def _candidates(dotted: str, imports: dict[str, str]) -> set[str]:
    """The names a dotted reference stands for: as written, and through the imports (every suffix)."""
    found = {dotted}
    head, _, rest = dotted.partition(".")
    if head in imports:
        full = imports[head] + ("." + rest if rest else "")
        parts = full.split(".")
        found |= {".".join(parts[i:]) for i in range(len(parts))}
    return found


def static_checks(nb, kit_reference, steps: dict[str, list[str]]) -> Findings:
    """Look at every student cell of the built notebook ``nb`` (see the module doc)."""
    findings = Findings()
    kit_trees, student = [], []  # student: (index, label, tree, raw source)
    kit_functions: dict[str, ast.AST] = {}
    kit_imports: dict[str, str] = {}
    for cell in kit_reference.cells:
        if cell.cell_type == "code" and not is_solution(cell):
            tree = _parse(cell.source)
            if tree:
                kit_trees.append(tree)
                kit_imports.update(_imports(tree))
                for stmt in tree.body:
                    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        kit_functions[stmt.name] = stmt
    kit_bound = {name for tree in kit_trees for name, _node in _bound(tree)}
    # name -> the values the kit's own cells assign it: a student cell repeating one (a copied setup line) is fine
    kit_values: dict[str, set[str]] = {}
    for tree in kit_trees:
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                kit_values.setdefault(stmt.targets[0].id, set()).add(ast.dump(stmt.value))
    kit_modules = set(kit_imports.values())
    names = check_names(kit_reference)

    # What each check cell of the built notebook reads, through the kit's functions it calls.
    def closure(tree) -> set[str]:
        seen, todo = set(), list(_reads(tree))
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in kit_functions:
                todo.extend(_reads(kit_functions[name]))
        return seen

    later_reads: list[set[str]] = []  # per cell index: names read by the kit's checks at or after it
    reads_after: set[str] = set()
    for cell in reversed(nb.cells):
        grading = cell.metadata.get("grading", {})
        if grading.get("exercise") or (grading.get("origin") == "kit" and re.search(r"\bcheck\(", cell.source)):
            tree = _parse(cell.source)
            reads_after = reads_after | (closure(tree) if tree else set())
        later_reads.append(reads_after)
    later_reads.reverse()
    builtin_names = set(dir(builtins))

    for index, cell in enumerate(nb.cells):
        if cell.metadata.get("grading", {}).get("origin") != "student":
            continue
        tree = _parse(cell.source)
        if tree is None:
            continue  # it fails when it runs, like any other error
        label = cell.metadata["grading"].get("label", "a cell")
        student.append((index, label, tree, cell.source))
        protected = (later_reads[index + 1] if index + 1 < len(later_reads) else set()) & (kit_bound | builtin_names)
        protected = (protected | PROTECTED | {n for n in later_reads[index] if n.startswith("test_")}) - set(names)
        imports = {**kit_imports, **_imports(tree)}
        modules = {name for name, full in imports.items() if "." not in full or name == full}

        def flag(node, why: str):
            line = getattr(node, "lineno", 0)
            text = f"{label}, line {line}: {why}"
            if text not in findings.tampering:
                findings.tampering.append(text)

        parents = _parents(tree)
        for name, node in _bound(tree):
            if name in protected:
                same = isinstance(node, (ast.Import, ast.ImportFrom)) and _imports(ast.Module([node], []))[name] \
                    == kit_imports.get(name)
                parent = parents.get(id(node))
                same = same or (isinstance(parent, ast.Assign) and len(parent.targets) == 1
                                and parent.targets[0] is node and ast.dump(parent.value) in kit_values.get(name, ()))
                if not same:
                    flag(node, f"it rebinds `{name}`, which the kit's checks use")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                for alias in node.names:
                    full = f"{module}.{alias.name}" if module else alias.name
                    top = full.split(".")[0]
                    if module == "course.exercises" and alias.name in ALLOWED_FROM_EXERCISES \
                            and alias.asname in (None, alias.name):
                        continue
                    if module != "course.exercises" and full in kit_modules:
                        continue  # an import the kit's own cells make (a copied setup line)
                    if top in TAMPER_MODULES:
                        flag(node, f"it imports {full}, which can change how the grader checks")
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in TAMPER_NAMES:
                if TAMPER_NAMES[node.id] and node.id != "get_ipython":
                    flag(node, f"it uses {node.id}()")
            elif isinstance(node, ast.Attribute):
                root = _root(node)
                module = imports.get(root or "", "").split(".")[0]
                if node.attr in TAMPER_ATTRS:
                    flag(node, f"it uses .{node.attr}")
                elif (module, node.attr) in MODULE_ATTRS and (
                        node.attr != "environ" or _environ_write(tree, node)) and (
                        node.attr not in ("stdout", "stderr") or isinstance(node.ctx, ast.Store)):
                    flag(node, f"it changes {module}.{node.attr}")
                elif isinstance(node.ctx, (ast.Store, ast.Del)) and root and (
                        root in protected or root in modules):
                    flag(node, f"it sets an attribute of `{root}`, which the kit's checks use")
            elif isinstance(node, ast.Constant) and node.value in ("KIT_GRADING", "NBGRADER_EXECUTION"):
                flag(node, f"it names the grader's switch {node.value}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "globals", "vars", "locals"):
                parent_write = _call_written(tree, node)
                if parent_write:
                    flag(node, f"it writes into {node.func.id}()")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "run_line_magic", "run_cell_magic") and node.args and isinstance(node.args[0], ast.Constant):
                magic = node.args[0].value
                if magic not in SAFE_MAGICS:
                    flag(node, f"it uses the magic %{magic}")
        if "get_ipython" in cell.source:
            flag(tree, "it uses get_ipython()")

    # Handing the step to the kit's version: the code of each exercise and of the helpers it uses.
    definitions: dict[str, list[tuple[ast.AST, dict]]] = {}
    for _index, _label, tree, _raw in student:
        imports = {**kit_imports, **_imports(tree)}
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                definitions.setdefault(stmt.name, []).append((stmt, imports))
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    for node in ast.walk(target):
                        if isinstance(node, ast.Name):
                            definitions.setdefault(node.id, []).append((stmt.value or stmt, imports))
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for alias in stmt.names:
                    definitions.setdefault(alias.asname or alias.name.split(".")[0], []).append((stmt, imports))
    for exercise in names:
        patterns = list(steps.get(exercise, []))
        reference = _reference_name(kit_reference, exercise)
        if reference:
            patterns.append(reference)
        seen, todo, hit = set(), [exercise], None
        while todo and not hit:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, imports in definitions.get(name, []):
                hit = _handoff(node, imports, patterns)
                if hit:
                    break
                todo.extend(n for n in _reads(node) if n in definitions and (n == exercise or n not in names))
        if hit:
            findings.handoffs[exercise] = hit
    return findings


def _handoff(node, imports: dict[str, str], patterns: list[str]) -> str | None:
    """The first kit callable of ``patterns`` the code ``node`` names (as written), or None."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            full = f"{node.module}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
            parts = full.split(".")
            found = {".".join(parts[i:]) for i in range(len(parts))}
            for pattern in patterns:
                if _pattern_hit(pattern, found):
                    return full
        return None
    for sub in ast.walk(node):
        dotted = _dotted(sub) if isinstance(sub, (ast.Name, ast.Attribute, ast.Call)) else None
        if dotted is None or (isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load)):
            continue
        candidates = _candidates(dotted, imports)
        for pattern in patterns:
            if _pattern_hit(pattern, candidates):
                return max(candidates, key=len).replace("?.", ".")
    return None


def _reference_name(kit_reference, exercise: str) -> str | None:
    for cell in kit_reference.cells:
        if cell.cell_type == "code" and not is_solution(cell):
            tree = _parse(cell.source)
            for stmt in tree.body if tree else []:
                found = _check_call(stmt)
                if found and found[0] == exercise:
                    value = next((k.value for k in found[1].keywords if k.arg == "reference"), None)
                    return value.id if isinstance(value, ast.Name) else None
    return None


def _parents(tree):
    return {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _call_written(tree, call) -> bool:
    """``globals()[...] = ...``, ``del globals()[...]``, ``globals().update(...)`` and the like."""
    parent = _parents(tree).get(id(call))
    if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, (ast.Store, ast.Del)):
        return True
    return isinstance(parent, ast.Attribute) and parent.attr in (
        "update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__")


def _environ_write(tree, node) -> bool:
    """``os.environ[...] = ...``, ``del os.environ[...]``, ``os.environ.update(...)``, ``os.environ = ...``."""
    if isinstance(node.ctx, (ast.Store, ast.Del)):
        return True
    parent = _parents(tree).get(id(node))
    if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, (ast.Store, ast.Del)):
        return True
    return isinstance(parent, ast.Attribute) and parent.attr in (
        "update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__")
