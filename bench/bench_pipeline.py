"""The pipeline's own overhead, and best-of-5 batched vs sequential, on the offline engines.

Offline engines: the kit's preview server, corpus retrieval with the baseline prompt (no LLM), and
the tiny CLIP test model. The overhead is the run's wall time over the sum of its stage times.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .timing import compare, line

FIELDS = {"steps": 4, "width": 256, "height": 256}


def run(rounds: int = 5) -> list[str]:
    from helpers.a1111 import A1111Client
    from helpers.clipqa import TINY_MODEL, ClipScorer, make_tiny_checkpoint
    from helpers.llm import LLM
    from helpers.pipeline import run_pipeline
    from sdserver import serve_in_thread

    server = serve_in_thread(host="127.0.0.1", port=0, engine="preview")
    try:
        with tempfile.TemporaryDirectory() as folder:
            client = A1111Client(server.url, auth="")
            scorer = ClipScorer(TINY_MODEL, str(make_tiny_checkpoint(Path(folder) / "tiny.safetensors")), "cpu")
            llm = LLM("http://127.0.0.1:9/v1", timeout=1)

            def pipeline(batch_size):
                return run_pipeline("lighthouse, storm", n=5, client=client, llm=llm, scorer=scorer, out_dir=folder,
                                    progress=False, batch_size=batch_size, **FIELDS)

            runs = [pipeline(5) for _ in range(rounds)]
            stages = ("text", "prompt", "clip_load", "generate", "score")
            total = sum(r.timings["total"] for r in runs)
            parts = sum(sum(r.timings.get(s, 0) for s in stages) for r in runs)
            out = [f"pipeline overhead: wall {total / rounds * 1000:.0f} ms vs sum of stages "
                   f"{parts / rounds * 1000:.0f} ms -> ratio {total / parts:.2f}"]
            t_batch, t_seq = compare(lambda: pipeline(5), lambda: pipeline(1), rounds)
            out.append(line("best of 5", "batched (1 call)", t_batch, "sequential (5 calls)", t_seq))
            return out
    finally:
        server.stop()
