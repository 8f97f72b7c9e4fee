"""POST /sdapi/v1/img2img on the kit's server, over real HTTP: both engines (preview, and diffusers on
tests/tiny_sd.py's random-weight model), through plain ``requests`` and through ``client.img2img``.

A1111's shape (images, parameters, info with real seeds and ``Denoising strength`` in every infotext),
its errors (404 without init image, 500 "Invalid encoded image", 500 for more images than the batch),
inpainting with a mask, sizes and resize modes, batches, seeds, progress and interrupt.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import requests
from conftest import ENGINES, decode_b64, pixel_array, png_b64, same_pixels
from PIL import Image

from helpers.a1111 import A1111Client, InvalidRequest
from helpers.a1111_fields import IMG2IMG_FIELDS
from helpers.infotext import parse_infotext
from sdserver.generation import img2img_steps, prepare_init_image
from sdserver.models import Img2ImgRequest

SMALL = {"width": 64, "height": 64, "steps": 4, "cfg_scale": 7.0, "sampler_name": "Euler a"}

pytestmark = pytest.mark.usefixtures("one_torch_thread") if "diffusers" in ENGINES else []


def init_image(width: int = 96, height: int = 64) -> Image.Image:
    """A start image with structure: a red square on a blue-green gradient."""
    image = Image.merge("RGB", [Image.new("L", (width, height), 30), Image.linear_gradient("L").resize((width, height)),
                                Image.new("L", (width, height), 160)])
    image.paste((230, 20, 20), (width // 4, height // 4, width // 2, height // 2))
    return image


INIT = png_b64(init_image())


@pytest.fixture(params=ENGINES)
def server(request, servers):
    return servers(request.param)


def img2img(server, expect: int = 200, **fields) -> dict:
    reply = requests.post(f"{server.url}/sdapi/v1/img2img",
                          json={"prompt": "a red fox", "init_images": [INIT], **SMALL, **fields}, timeout=60)
    assert reply.status_code == expect, reply.text
    return reply.json()


# --- shape, sizes, seeds ----------------------------------------------------------------------------


def test_answer_has_a1111_shape_real_seeds_and_denoising_strength(server):
    reply = img2img(server, seed=-1, batch_size=2, n_iter=2, denoising_strength=0.4, width=96, height=64)
    assert set(reply) == {"images", "parameters", "info"}
    info = json.loads(reply["info"])
    seeds = info["all_seeds"]
    assert seeds[0] != -1 and seeds == [seeds[0] + i for i in range(4)] and len(reply["images"]) == 4
    assert info["denoising_strength"] == 0.4 and info["steps"] == 4 and (info["width"], info["height"]) == (96, 64)
    assert {pixel_array(image).shape for image in reply["images"]} == {(64, 96, 3)}
    for index, text in enumerate(info["infotexts"]):
        fields = parse_infotext(text)
        assert fields["Denoising strength"] == "0.4" and fields["Seed"] == str(seeds[index])
        assert fields["Steps"] == "4"  # A1111 writes the steps asked for, though it runs fewer
        assert decode_b64(reply["images"][index]).info["parameters"] == text
    params = reply["parameters"]
    assert params["seed"] == -1 and params["init_images"] is None and params["mask"] is None
    assert list(params) == list(Img2ImgRequest.model_fields)
    echoed = img2img(server, seed=1, include_init_images=True)["parameters"]
    assert echoed["init_images"] == [INIT] and echoed["denoising_strength"] == 0.75  # A1111's default


def test_same_seed_same_pixels_and_a_batch_equals_single_calls(server):
    batch = img2img(server, seed=20, batch_size=2, denoising_strength=0.6)
    assert json.loads(batch["info"])["all_seeds"] == [20, 21]
    for index, seed in enumerate((20, 21)):
        single = img2img(server, seed=seed, denoising_strength=0.6)["images"][0]
        assert same_pixels(batch["images"][index], single)
    assert not same_pixels(batch["images"][0], batch["images"][1], 10)


def test_denoising_strength_0_and_1_differ_and_the_init_image_matters(server):
    low = pixel_array(img2img(server, seed=3, denoising_strength=0.0)["images"][0])
    high = pixel_array(img2img(server, seed=3, denoising_strength=1.0)["images"][0])
    assert not same_pixels(low, high, 10)
    other_init = png_b64(Image.new("RGB", (64, 64), (250, 250, 0)))
    # (Not by much on the tiny model: its random VAE squeezes every image into nearly the same latent.)
    assert not same_pixels(low, pixel_array(img2img(server, seed=3, denoising_strength=0.0,
                                                    init_images=[other_init])["images"][0]), 0)


def test_several_init_images_make_the_batch(server):
    second = png_b64(Image.new("RGB", (64, 64), (250, 250, 0)))
    reply = img2img(server, seed=5, batch_size=4, init_images=[INIT, second], denoising_strength=0.2)
    assert json.loads(reply["info"])["all_seeds"] == [5, 6] and len(reply["images"]) == 2  # k images: batches of k
    alone = img2img(server, seed=6, init_images=[second], denoising_strength=0.2)["images"][0]
    assert same_pixels(reply["images"][1], alone)


def test_preview_shows_the_init_image_through_the_placeholder(servers):
    server = servers("preview")
    kept = pixel_array(img2img(server, seed=1, denoising_strength=0.0, width=96, height=64)["images"][0])
    replaced = pixel_array(img2img(server, seed=1, denoising_strength=1.0, width=96, height=64)["images"][0])
    start = pixel_array(init_image())
    # At 0 the init image shows (under the label's shade and text); at 1 only the placeholder pattern.
    assert np.abs(kept - start).mean() + 15 < np.abs(replaced - start).mean()
    assert "PLACEHOLDER" in str(A1111Client(server.url, auth="").img2img(init_image(), "a fox", seed=1, steps=2))


def test_resize_modes_prepare_the_init_image_as_a1111():
    wide = init_image(120, 40)
    for mode in (0, 1, 2, 3):
        assert prepare_init_image(wide, mode, 64, 64).size == (64, 64)
    cropped = np.asarray(prepare_init_image(wide, 1, 64, 64), dtype=int)  # centre crop: the square is cut
    filled = np.asarray(prepare_init_image(wide, 2, 64, 64), dtype=int)  # fit: the gradient's edges repeat above
    assert (filled[0] == filled[10]).all() and not (cropped[0] == cropped[10]).all()
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert prepare_init_image(transparent, 0, 8, 8).getpixel((0, 0)) == (255, 255, 255)  # img2img_background_color


def test_steps_run_are_a1111s():
    assert img2img_steps(20, 0.75, False) == (20, 16)  # A1111: int(0.75 * 20) + 1
    assert img2img_steps(20, 1.0, False) == (20, 20) and img2img_steps(20, 0.0, False) == (20, 1)
    assert img2img_steps(20, 0.5, True) == (40, 20)  # option img2img_fix_steps: exactly the steps asked for


# --- errors ---------------------------------------------------------------------------------------


def test_errors_as_a1111_gives_them(server):
    assert img2img(server, 500, mask="not an image!")["detail"] == "Invalid encoded image"
    assert img2img(server, 404, init_images=None)["detail"] == "Init image not found"
    reply = img2img(server, 500, init_images=["not an image!"])
    assert reply["detail"] == "Invalid encoded image"
    assert img2img(server, 500, init_images=[INIT, INIT], batch_size=1)["errors"].startswith("bad number of images")
    assert img2img(server, 422, denoising_strength=1.5)["detail"][0]["loc"] == ["body", "denoising_strength"]
    # A data-URI prefix is accepted, as A1111 and webuiapi send it.
    assert len(img2img(server, seed=1, init_images=["data:image/png;base64," + INIT])["images"]) == 1


def test_the_decode_limit_applies_to_init_images(servers):
    from conftest import bomb_png_b64

    reply = img2img(servers("preview"), 422, init_images=[bomb_png_b64()])
    assert reply["detail"][0]["loc"] == ["body", "init_images[0]"] and "megapixels" in reply["detail"][0]["msg"]


# --- the client ---------------------------------------------------------------------------------------


def test_client_img2img_with_pil_images_and_paths(server, tmp_path):
    client = A1111Client(server.url, auth="")
    path = tmp_path / "start.png"
    init_image().save(path)
    gen = client.img2img(path, "a red fox", denoising_strength=0.5, seed=9, batch_size=2, **SMALL)
    assert gen.seeds == [9, 10] and [image.size for image in gen.images] == [(64, 64)] * 2
    assert parse_infotext(gen.infotexts[0])["Denoising strength"] == "0.5"
    same = client.img2img(init_image(), "a red fox", denoising_strength=0.5, seed=9, **SMALL)
    assert same_pixels(np.asarray(gen.images[0], dtype=np.int16), np.asarray(same.images[0], dtype=np.int16))
    with pytest.raises(InvalidRequest, match="enable_hr"):
        client.img2img(path, "a fox", enable_hr=True)  # a txt2img-only field
    with pytest.raises(InvalidRequest, match="denoising_strength"):
        client.img2img(path, "a fox", denoising_strength=2)


def test_client_field_list_matches_the_server():
    assert IMG2IMG_FIELDS == set(Img2ImgRequest.model_fields)


# --- progress and interrupt -------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_progress_and_interrupt_end_a_slow_img2img_early(servers, engine):
    server = servers(engine, step_delay=0.05)
    box: dict = {}

    def run():
        started = time.monotonic()
        box["reply"] = img2img(server, seed=2, steps=200, n_iter=3, denoising_strength=0.5)
        box["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while True:
        state = requests.get(f"{server.url}/sdapi/v1/progress", timeout=5).json()["state"]
        if state["job_count"] > 0 and state["sampling_step"] >= 2:
            break
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)
    assert state["job"] == "Batch 1 out of 3" and state["sampling_steps"] == 101  # A1111: int(0.5 * 200) + 1
    assert requests.post(f"{server.url}/sdapi/v1/interrupt", timeout=5).json() == {}
    thread.join(30)
    assert box["elapsed"] < 3 * 101 * 0.05 / 2  # far less than the whole job
    assert len(box["reply"]["images"]) == 1  # the later batches were skipped


# --- the diffusers engine: the init image is really the start -------------------------------------------


@pytest.mark.skipif("diffusers" not in ENGINES, reason="needs the diffusers extra")
def test_diffusers_strength_near_0_stays_near_the_init_image(tiny_models):
    """At denoising strength ~0 only the last, smallest-noise step runs, so the image is the VAE's round trip
    of the init image, give or take: nearer to it than at strength 1. (The tiny model's VAE has random
    weights, so the round trip is not the init image itself, and its latents are so small that even the
    last step's noise shows; real models keep the picture.)"""
    import torch
    from diffusers import AutoencoderKL
    from diffusers.image_processor import VaeImageProcessor

    from sdserver import serve_in_thread

    start = init_image(64, 64)
    vae = AutoencoderKL.from_pretrained(str(tiny_models["a"] / "vae"), local_files_only=True)
    processor = VaeImageProcessor(vae_scale_factor=8)
    with torch.inference_mode():
        decoded = vae.decode(vae.encode(processor.preprocess(start)).latent_dist.mean).sample
    round_trip = np.asarray(processor.postprocess(decoded)[0], dtype=np.int16)
    with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder="full", dtype="float32") as handle:
        def distance(strength: float, seed: int) -> float:
            reply = img2img(handle, seed=seed, denoising_strength=strength, init_images=[png_b64(start)], cfg_scale=1)
            return float(np.abs(pixel_array(reply["images"][0]) - round_trip).mean())

        near = [distance(0.0, seed) for seed in (1, 2)]
        far = [distance(1.0, seed) for seed in (1, 2)]
    assert max(near) < min(far), (near, far)


# --- inpainting --------------------------------------------------------------------------------------


def mask_b64(box=(32, 16, 64, 48), size=(96, 64), mode: str = "L") -> str:
    """White (repaint) in ``box``, black elsewhere; as RGBA: the box opaque, the rest transparent."""
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    if mode == "RGBA":
        mask = Image.merge("RGBA", [Image.new("L", size, 0)] * 3 + [mask])
    return png_b64(mask)


def _regions(reply: dict) -> tuple[float, float]:
    """Mean absolute difference from the init image inside the mask's box and far outside it."""
    out, init = pixel_array(decode_b64(reply["images"][0])), pixel_array(init_image())
    inside = abs(out[16:48, 32:64] - init[16:48, 32:64]).mean()
    outside = abs(out[:, :20] - init[:, :20]).mean() + abs(out[:, 76:] - init[:, 76:]).mean()
    return inside, outside


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_inpainting_repaints_the_mask_and_keeps_the_rest(server, mode):
    """As A1111's img2img tab: white is repainted, the rest comes back as it was (the result is laid over
    the start image through the mask); an RGBA mask's alpha is the mask."""
    fields = {"width": 96, "height": 64, "seed": 3, "denoising_strength": 0.9, "inpainting_fill": 1}
    reply = img2img(server, mask=mask_b64(mode=mode), mask_blur=0, **fields)
    inside, outside = _regions(reply)
    assert inside > 5 and outside == 0, (inside, outside)
    text = parse_infotext(json.loads(reply["info"])["infotexts"][0])
    assert "Mask blur" not in text and "Mask mode" not in text and text["Denoising strength"] == "0.9"
    inverted = img2img(server, mask=mask_b64(), mask_blur=0, inpainting_mask_invert=1, **fields)
    inside, outside = _regions(inverted)
    assert inside == 0 and outside > 5, (inside, outside)
    assert parse_infotext(json.loads(inverted["info"])["infotexts"][0])["Mask mode"] == "Inpaint not masked"


def test_inpainting_options_write_a1111s_infotext(server):
    base = {"width": 96, "height": 64, "seed": 3, "mask": mask_b64()}
    whole = {"inpaint_full_res": False}
    # A1111's API defaults: blur 4, fill 0 ("fill"), "Only masked" with no padding
    cases = [({}, {"Mask blur": "4", "Masked content": "fill", "Inpaint area": "Only masked",
                   "Masked area padding": "0"}),
             ({**whole, "inpainting_fill": 2}, {"Mask blur": "4", "Masked content": "latent noise"}),
             ({**whole, "inpainting_fill": 3, "mask_blur": 0}, {"Masked content": "latent nothing"}),
             ({**whole, "inpainting_fill": 1, "mask_blur_x": 2, "mask_blur_y": 6}, {}),  # two blurs: no "Mask blur"
             ({"inpainting_fill": 1, "mask_blur": 0, "inpaint_full_res_padding": 8},
              {"Inpaint area": "Only masked", "Masked area padding": "8"})]
    for fields, expected in cases:
        reply = img2img(server, **base, **fields)
        text = parse_infotext(json.loads(reply["info"])["infotexts"][0])
        shown = {key: text[key] for key in ("Mask blur", "Masked content", "Inpaint area", "Masked area padding")
                 if key in text}
        assert shown == expected, fields
        assert _regions(reply)[1] < 1, fields  # far from the mask, the start image stays


def test_only_masked_with_an_empty_mask_is_a_plain_img2img_as_in_a1111(server):
    reply = img2img(server, width=96, height=64, seed=3, mask=mask_b64(box=(0, 0, 0, 0)), inpaint_full_res=True)
    info = json.loads(reply["info"])
    assert "Unable to perform \"Inpaint Only mask\"" in info["comments"]
    assert "Inpaint area" not in parse_infotext(info["infotexts"][0])


@pytest.mark.skipif("diffusers" not in ENGINES, reason="the diffusers engine is not installed")
def test_the_diffusers_engine_holds_the_latents_outside_the_mask(servers):
    """Before the result is laid over the start image, the engine itself keeps what is not masked: after the
    last step those latents are the start image's (the same as a job whose mask keeps everything), and a
    job without a mask repaints them."""
    import torch

    from sdserver.engines import GenerationJob

    engine = servers("diffusers").app.state.engine
    start = init_image(64, 64)
    repaint = Image.new("L", (64, 64), 0)
    repaint.paste(255, (32, 0, 64, 64))  # the right half
    job = {"prompt": "a red fox", "seeds": [5], "subseeds": [5], "width": 64, "height": 64, "steps": 3,
           "schedule_steps": 3, "init_images": [start], "denoising_strength": 1.0, "sampler_name": "Euler a"}

    def left(**fields):  # the latents of the left half, not masked
        latents = engine.generate(GenerationJob(**job, **fields), lambda step, preview: True, output_type="latent")
        return latents[..., :4].float()

    start_latents = left(latent_mask=Image.new("L", (64, 64), 0))  # a mask that keeps everything
    assert torch.allclose(left(latent_mask=repaint), start_latents)
    assert (left() - start_latents).abs().mean() > 0.2 * start_latents.abs().mean()  # without a mask: repainted


# --- A1111's "SD upscale" script -----------------------------------------------------------------------


def test_sd_upscale_makes_a_bigger_picture_from_img2img_tiles(server):
    """A1111's own test payload: script "sd upscale", overlap 8, Lanczos, x2: one 192x128 picture from
    64x64 tiles; the infotext is the first batch's with the script's two entries; the seed counts up."""
    reply = img2img(server, width=64, height=64, seed=7, batch_size=2, script_name="sd upscale",
                    script_args=["", 8, "Lanczos", 2.0])
    info = json.loads(reply["info"])
    assert len(reply["images"]) == 1 and decode_b64(reply["images"][0]).size == (192, 128)
    text = parse_infotext(info["infotexts"][0])
    assert (text["SD upscale overlap"], text["SD upscale upscaler"], text["Seed"]) == ("8", "Lanczos", "7")
    assert info["all_seeds"] == [7, 8] and reply["parameters"]["init_images"] is None
    kept = img2img(server, width=64, height=64, seed=7, script_name="SD Upscale", script_args=["", 8, 0, 2.0])
    assert decode_b64(kept["images"][0]).size == (96, 64)  # upscaler 0, "None": the picture keeps its size
    assert img2img(server, 422, script_name="sd upscale", script_args=["", 8, "ESRGAN_4x", 2.0])
    assert img2img(server, 422, script_name="sd upscale", script_args=["", 8, 9, 2.0])


def test_sd_upscale_is_img2img_only_and_listed_there(server):
    reply = requests.post(f"{server.url}/sdapi/v1/txt2img", timeout=60,
                          json={"prompt": "x", **SMALL, "script_name": "sd upscale"})
    assert reply.status_code == 422 and reply.json()["detail"] == "Script 'sd upscale' not found"
    assert requests.get(f"{server.url}/sdapi/v1/scripts", timeout=10).json() == \
        {"txt2img": [], "img2img": ["sd upscale"]}


def test_tiles_cover_the_picture_and_blend_back_seamlessly():
    from sdserver.sd_upscale import blend, tile_boxes

    boxes = tile_boxes(150, 100, 64, 64, 16)
    assert boxes[0][:2] == (0, 0) and (boxes[-1][2], boxes[-1][3]) == (150, 100)
    picture = init_image(150, 100)
    assert same_pixels(blend([picture.crop(box) for box in boxes], boxes, (150, 100), 16), picture, tolerance=1)
