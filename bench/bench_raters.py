"""Cost per image of each rater against CLIP's, side by side in one run, on the kit's test LLM server.

CLIP is ViT-B-32 at 224 px with random weights (timing does not depend on the weight values). The LLM
raters talk to tests/llm_server.py over HTTP; its answer time (``MODEL_SECONDS`` per chat call) stands in
for the vision model, so the ratios mostly count model calls: a caption is 1 chat + 1 embedding call, the
VQA score 1 call, the question checks 1 call per question (plus the questions, once per text).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from .timing import compare

TEXT = "A white lighthouse stands on black rocks while a storm breaks the waves below."
MODEL_SECONDS = 0.05  # a stand-in: a real small vision model on a GPU answers in 0.2-2 s, on a CPU far slower
IMAGES = 4


def run(rounds: int = 3) -> list[str]:
    import open_clip
    from PIL import Image
    from safetensors.torch import save_file

    from helpers.clipqa import ClipScorer
    from helpers.llm import LLM
    from helpers.raters import QUESTIONS_SYSTEM, caption_rater, clip_rater, question_rater, vqa_rater

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from llm_server import LLMTestServer

    images = [Image.new("RGB", (512, 512), (40 * i, 90, 200 - 30 * i)) for i in range(IMAGES)]
    with tempfile.TemporaryDirectory() as folder, LLMTestServer(mode="slow", delay=MODEL_SECONDS) as server:
        path = Path(folder) / "vit-b-32-random.safetensors"
        save_file({k: v.contiguous() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}, str(path))
        clip = clip_rater(ClipScorer("ViT-B-32", str(path), "cpu"))
        questions = json.dumps({"questions": ["Is there a lighthouse?", "Is there a storm?", "Are there rocks?"]})
        server.reply = lambda messages, body: questions if messages[0].get("content") == QUESTIONS_SYSTEM else None
        llm = LLM(server.base_url, api_key="bench", timeout=30, max_retries=0, embed_model="test-embed")
        out = [f"raters, {IMAGES} images of 512 px, test LLM server answering each chat in {MODEL_SECONDS} s:"]
        for rater in (caption_rater(llm), vqa_rater(llm), question_rater(llm)):
            calls = sum(server.hits.values())
            rater.score(TEXT, images)  # warm-up; the question rater writes its questions here, once per text
            per_run = sum(server.hits.values()) - calls
            t_rater, t_clip = compare(lambda r=rater: r.score(TEXT, images), lambda: clip.score(TEXT, images), rounds)
            out.append(f"  {rater.name}: {t_rater / IMAGES * 1000:.0f} ms per image vs CLIP "
                       f"{t_clip / IMAGES * 1000:.1f} ms -> ratio {t_rater / t_clip:.1f} "
                       f"({per_run / IMAGES:.1f} server calls per image on the first run)")
        return out
