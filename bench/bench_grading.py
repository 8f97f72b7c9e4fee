"""The grader's overhead: one notebook graded (own process, clean environment, limits, results read back)
against the same notebook run alone with nbclient, both against the kit's preview server.

The notebook is the kit's own 02_text_generation solution (offline: corpus retrieval, no LLM), so the
ratio is what a class's batch pays per notebook for the isolation. Where Linux namespaces work, "graded"
is the isolated run (no network, files hidden, the preview server started inside the namespace), and a
second line compares it with the same grading without the namespaces.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .timing import compare, line

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_text_generation.ipynb"


def run(rounds: int = 3) -> list[str]:
    import nbformat
    from nbclient import NotebookClient

    from course.grading import Limits, run_notebook
    from course.isolation import available
    from sdserver import serve_in_thread

    server = serve_in_thread(host="127.0.0.1", port=0, engine="preview")
    source = NOTEBOOK.read_bytes()
    limits = Limits()
    saved = {k: os.environ.get(k) for k in ("SD_URL", "LLM_BASE_URL", "OUTPUT_DIR")}
    try:
        with tempfile.TemporaryDirectory() as folder:
            os.environ.update(SD_URL=server.url, LLM_BASE_URL="http://127.0.0.1:9/v1", OUTPUT_DIR=folder)

            def graded(isolate=None):
                result = run_notebook(source, server.url, limits, isolate)
                assert not result["stopped"] and not result["error"], result

            def alone():
                nb = nbformat.reads(source.decode("utf-8"), as_version=4)
                NotebookClient(nb, timeout=120, kernel_name="python3",
                               resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

            why = available()
            t_graded, t_alone = compare(graded, alone, rounds, warmup=0)
            lines = [line("grading one notebook (02)" + (f" (not isolated: {why})" if why else ", isolated"),
                          "graded", t_graded, "run alone", t_alone)]
            if not why:
                t_isolated, t_plain = compare(graded, lambda: graded(False), rounds, warmup=0)
                lines.append(line("grading one notebook (02): the namespaces' cost", "isolated", t_isolated,
                                  "not isolated", t_plain))
            return lines
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
