"""`import helpers` vs `import torch`, each in a fresh interpreter (the way a notebook starts)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from .timing import compare, line


def _importer(statement: str):
    return lambda: subprocess.run([sys.executable, "-c", statement], check=True)


def run(rounds: int = 7) -> list[str]:
    base = _importer("pass")
    helpers = _importer("import helpers, helpers.a1111")
    t_helpers, t_base = compare(helpers, base, rounds)
    out = [line("import", "import helpers + helpers.a1111", t_helpers, "bare python", t_base)]
    if importlib.util.find_spec("torch") is None:
        out.append("import: torch is not installed in this environment, so the ratio to `import torch` is not measured")
        return out
    t_helpers, t_torch = compare(helpers, _importer("import torch"), rounds)
    out.append(line("import", "import helpers + helpers.a1111", t_helpers, "import torch", t_torch))
    return out
