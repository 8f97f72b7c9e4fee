"""ClipScorer.similarity for one text and 5 images vs the same work done with raw open_clip calls.

ViT-B-32 at 224 px with random weights saved to a checkpoint (timing does not depend on the
weight values), loaded through CLIP_PRETRAINED=<file> as users load real weights.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .timing import compare, line

TEXT = "a white lighthouse on black rocks in a storm, oil painting"


def run(rounds: int = 10) -> list[str]:
    import open_clip
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from helpers.clipqa import ClipScorer

    images = [Image.new("RGB", (512, 512), (40 * i, 90, 200 - 30 * i)) for i in range(5)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vit-b-32-random.safetensors"
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        del model

        started = time.perf_counter()
        scorer = ClipScorer("ViT-B-32", str(path), "cpu")
        load = time.perf_counter() - started

        raw_model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(path))
        raw_model.eval()
        tokenizer = open_clip.get_tokenizer("ViT-B-32")

        def raw():
            with torch.inference_mode():
                image = raw_model.encode_image(torch.stack([preprocess(i) for i in images]))
                text = raw_model.encode_text(tokenizer([TEXT]))
                image = image / image.norm(dim=-1, keepdim=True)
                text = text / text.norm(dim=-1, keepdim=True)
                (image @ text.T).squeeze(1).tolist()

        def kit():
            scorer.similarity(TEXT, images)

        t_kit, t_raw = compare(kit, raw, rounds)
    return [line("CLIP 1 text x 5 images", "ClipScorer.similarity", t_kit, "raw open_clip", t_raw),
            f"CLIP one-time load of ViT-B-32 from a checkpoint: {load:.2f} s (a second ClipScorer reuses it)"]
