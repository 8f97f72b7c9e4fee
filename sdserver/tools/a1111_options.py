"""Write sdserver/a1111_options.json, A1111's option table, from a checkout of A1111 (v1.10.1).

    python -m sdserver.tools.a1111_options ~/stable-diffusion-webui > sdserver/a1111_options.json

It reads the Python source without running it (no torch, no gradio): every ``"key": OptionInfo(default, ...)``
in a dict and every ``add_option("key", OptionInfo(default, ...))`` of ``modules/shared_options.py`` and of
the built-in extensions that register options, in that order, which is the order of A1111's GET /options.
The few defaults that are not literals are evaluated as in a default install (``outputs/...`` paths,
``--enable-console-prompts`` off). It also lists the options A1111 does not let the API change:

* ``restricted``: paths and file-name patterns (``restricted_opts`` and the ``hide_dirs`` ones), which
  A1111 silently leaves unchanged when started with ``--hide-ui-dir-config``;
* ``api_restricted``: ``restrict_api=True`` (the URL-fetching switches), never changed through the API;
* ``html``: the explanations shown in the Settings tab (``OptionHTML``), which are never saved.

Example (a two-option source file):
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "modules").mkdir()
    >>> _ = (root / "modules" / "shared_options.py").write_text(
    ...     'restricted_opts = {"outdir_samples"}\\n'
    ...     'options_templates.update(options_section(("a", "A"), {\\n'
    ...     '    "send_seed": OptionInfo(True, "Send seed").info("x"),\\n'
    ...     '    "outdir_samples": OptionInfo(util.truncate_path(os.path.join(default_output_dir, "s")), "Dir"),\\n'
    ...     '}))\\n')
    >>> table = build(root)
    >>> table["options"], table["restricted"]
    ({'send_seed': True, 'outdir_samples': 'outputs/s'}, ['outdir_samples'])
"""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

VERSION = "v1.10.1"
FILES = [
    "modules/shared_options.py",
    # built-in extensions and processing scripts, as they load: module-level options first, then on_ui_settings
    # ones (those exist only when A1111 builds its web UI: not with --nowebui)
    "extensions-builtin/Lora/scripts/lora_script.py",
    "extensions-builtin/canvas-zoom-and-pan/scripts/hotkey_config.py",
    "extensions-builtin/extra-options-section/scripts/extra_options_section.py",
    "modules/processing_scripts/comments.py",  # loaded after the extensions' scripts (scripts.py, load_scripts)
    "extensions-builtin/hypertile/scripts/hypertile_script.py",
    "extensions-builtin/LDSR/scripts/ldsr_model.py",
    "extensions-builtin/SwinIR/scripts/swinir_model.py",
]
# What the non-literal defaults evaluate to in a default install, run from the checkout's folder.
NAMES = {
    "os": os,
    "default_output_dir": "outputs",
    "data_path": "",
    "util": SimpleNamespace(truncate_path=lambda path: path),
    "shared": SimpleNamespace(cmd_opts=SimpleNamespace(enable_console_prompts=False)),
}


def _option_call(node: ast.AST) -> ast.Call | None:
    """``OptionInfo(...)`` / ``OptionHTML(...)`` under any ``.info(...)/.link(...)`` chain, else None."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call):
        node = node.func.value
    if isinstance(node, ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in ("OptionInfo", "OptionHTML"):
            return node
    return None


def _value(node: ast.expr):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}}, dict(NAMES))


def _hides_dirs(call: ast.Call) -> bool:
    """component_args=hide_dirs, or a component dict with **hide_dirs: a path option in A1111's UI."""
    return "hide_dirs" in ast.unparse(call)


def _scan(tree: ast.AST, table: dict) -> None:
    def add(key: str, call: ast.Call) -> None:
        html = call.func.attr if isinstance(call.func, ast.Attribute) else call.func.id
        default = _value(call.args[0]) if call.args else None
        if html == "OptionHTML":
            table["html"].append(key)
            default = str(default).strip()
        table["options"][key] = default
        if any(kw.arg == "restrict_api" and _value(kw.value) for kw in call.keywords):
            table["api_restricted"].append(key)
        if _hides_dirs(call):
            table["restricted"].append(key)

    for node in _in_order(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "restricted_opts":
            table["restricted"].extend(_value(node.value))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                call = _option_call(value)
                if call is not None and isinstance(key, ast.Constant):
                    add(key.value, call)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_option" and len(node.args) == 2:
            call = _option_call(node.args[1])
            if call is not None:
                add(_value(node.args[0]), call)


def _in_order(node: ast.AST):
    """Every node, parents before children, in source order (ast.walk is breadth-first)."""
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _in_order(child)


def build(root: str | Path) -> dict:
    """The table from the checkout at ``root`` (missing extension files are skipped)."""
    table = {"source": "", "options": {}, "restricted": [], "api_restricted": [], "html": []}
    read = []
    for name in FILES:
        path = Path(root) / name
        if path.exists():
            _scan(ast.parse(path.read_text(encoding="utf-8")), table)
            read.append(name)
    table["restricted"] = [key for key in table["options"] if key in set(table["restricted"])]
    table["source"] = f"AUTOMATIC1111/stable-diffusion-webui {VERSION}: " + ", ".join(read)
    return table


if __name__ == "__main__":  # pragma: no cover
    json.dump(build(sys.argv[1]), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
