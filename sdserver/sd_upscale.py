"""A1111's img2img script "SD upscale": a bigger picture made of img2img tiles.

``script_name: "sd upscale"`` with ``script_args: [_, overlap, upscaler, scale_factor]`` (A1111's order; the
upscaler by its index in ``GET /upscalers`` or by its name). The start image is scaled up by
``scale_factor`` with that upscaler, cut into tiles of the request's width x height that overlap by
``overlap`` pixels, each tile is run through img2img (``batch_size`` tiles at a time, the seed counting
up by one per batch), and the tiles are blended back into one picture; ``n_iter`` makes that many pictures,
each from the next seed. The infotext is the first batch's, with ``SD upscale overlap`` and
``SD upscale upscaler`` added, as in A1111.

    >>> tiles = tile_boxes(160, 96, 64, 64, 16)
    >>> len(tiles), tiles[-1]
    (6, (96, 32, 160, 96))
"""

from __future__ import annotations

import json
import math
import random
from typing import Callable

from fastapi import HTTPException
from PIL import Image

from .catalog import A1111_MODEL_UPSCALERS, UPSCALERS
from .images import decode_image, encode_png_b64

TITLE = "sd upscale"  # A1111 finds a script by its title, lower-cased
RESAMPLE = {"None": None, "Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}


def is_sd_upscale(req) -> bool:
    return str(req.script_name or "").lower() == TITLE


def _arguments(args: list) -> tuple[int, str, float]:
    """(overlap, upscaler name, scale factor) from A1111's script_args, with its defaults (64, None, 2)."""
    args = list(args or []) + [None] * 4
    overlap = int(args[1]) if args[1] is not None else 64
    factor = float(args[3]) if args[3] is not None else 2.0
    names = [item["name"] for item in UPSCALERS]
    chosen = args[2] if args[2] is not None else 0
    if isinstance(chosen, str):
        by_name = {name.lower(): name for name in names}
        if chosen.lower() not in by_name:
            known = "an A1111 model upscaler, which the kit's server does not have" \
                if chosen in A1111_MODEL_UPSCALERS else "not an upscaler"
            raise HTTPException(status_code=422, detail=f"SD upscale: '{chosen}' is {known}; use one of {names}")
        return overlap, by_name[chosen.lower()], factor
    if not 0 <= int(chosen) < len(names):
        raise HTTPException(status_code=422, detail=f"SD upscale: upscaler index {chosen} is not one of 0-"
                                                    f"{len(names) - 1} ({names})")
    return overlap, names[int(chosen)], factor


def tile_boxes(width: int, height: int, tile_w: int, tile_h: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles of tile_w x tile_h covering a width x height picture, each overlapping its neighbours by at
    least ``overlap`` pixels, spread evenly so the last ones end at the edges (row by row)."""
    def starts(size: int, tile: int) -> list[int]:
        if size <= tile:
            return [0]
        count = math.ceil((size - overlap) / max(tile - overlap, 1))
        count = max(count, 2)
        return [round(i * (size - tile) / (count - 1)) for i in range(count)]

    return [(x, y, x + tile_w, y + tile_h) for y in starts(height, tile_h) for x in starts(width, tile_w)]


def blend(tiles: list[Image.Image], boxes: list[tuple], size: tuple[int, int], overlap: int) -> Image.Image:
    """The tiles put back into one picture; where they overlap, a weighted average whose weights fall
    linearly towards each tile's edge, so the seams do not show."""
    import numpy as np

    total = np.zeros((size[1], size[0], 3), dtype=np.float64)
    weight = np.zeros((size[1], size[0], 1), dtype=np.float64)
    for tile, (x1, y1, x2, y2) in zip(tiles, boxes):
        w, h = x2 - x1, y2 - y1
        ramp_x = np.minimum(np.minimum(np.arange(w) + 1, w - np.arange(w)) / max(overlap, 1), 1.0)
        ramp_y = np.minimum(np.minimum(np.arange(h) + 1, h - np.arange(h)) / max(overlap, 1), 1.0)
        mask = (ramp_y[:, None] * ramp_x[None, :])[..., None]
        pixels = np.asarray(tile.convert("RGB").resize((w, h)), dtype=np.float64)
        cw, ch = min(x2, size[0]) - x1, min(y2, size[1]) - y1  # a tile may reach past a small picture
        total[y1:y1 + ch, x1:x1 + cw] += (pixels * mask)[:ch, :cw]
        weight[y1:y1 + ch, x1:x1 + cw] += mask[:ch, :cw]
    return Image.fromarray(np.clip(total / np.maximum(weight, 1e-8) + 0.5, 0, 255).astype(np.uint8))


def run(req, limits, run_batch: Callable[[object, dict], dict]) -> dict:
    """A1111's reply for an SD upscale request; ``run_batch(request, extra_infotext)`` runs one img2img
    request (a batch of tiles) and returns its reply."""
    overlap, upscaler, factor = _arguments(req.script_args)
    start = decode_image(req.init_images[0], limits, "init_images[0]").convert("RGB")
    size = (max(1, round(start.width * factor)), max(1, round(start.height * factor)))
    if RESAMPLE[upscaler] is not None:
        start = start.resize(size, RESAMPLE[upscaler])
    size = start.size  # "None" keeps the picture as it is, as in A1111
    width, height = req.value("width"), req.value("height")
    boxes = tile_boxes(size[0], size[1], width, height, overlap)
    tiles = [start.crop(box) for box in boxes]
    batch_size, extra = req.value("batch_size"), {"SD upscale overlap": overlap, "SD upscale upscaler": upscaler}
    base = req.value("seed")
    base = random.randrange(4294967294) if base == -1 else base  # as generation.random_seed
    first, pictures = None, []
    for n in range(req.value("n_iter")):
        seed, done = base + n, []
        for index in range(0, len(tiles), batch_size):
            batch = tiles[index:index + batch_size]
            part = req.model_copy(update={
                "init_images": [encode_png_b64(tile) for tile in batch], "batch_size": len(batch), "n_iter": 1,
                "seed": seed, "script_name": None, "script_args": [], "resize_mode": 0})
            reply = run_batch(part, extra)
            info = json.loads(reply["info"])
            first = first or (reply, info)
            done += [decode_image(image) for image in reply["images"]]
            seed = info["seed"] + 1  # A1111: the next batch starts one seed on
            if info.get("interrupted"):
                break
        done += tiles[len(done):]  # an interrupt: the rest stay as upscaled
        pictures.append(blend(done, boxes, size, overlap))
    reply, info = first
    text = info["infotexts"][0]
    info["infotexts"] = [text] * len(pictures)  # A1111: every picture gets the first batch's infotext
    parameters = req.model_dump()
    if not req.value("include_init_images"):
        parameters.update(init_images=None, mask=None)
    return {"images": [encode_png_b64(picture, text) for picture in pictures] if reply["images"] else [],
            "parameters": parameters, "info": json.dumps(info)}
