"""A1111-style single-file checkpoints, read for real by diffusers' ``from_single_file``.

The tiny random-weight model of tests/tiny_sd.py is written as one ``.safetensors`` file in the
original LDM layout (tests/a1111_checkpoint.py), next to a folder holding only its configs (what
users pass as ``--config``). Then: diffusers must read back every weight unchanged, the kit's
server must make the same images from the file as from the diffusers folder, with A1111's names
and hash for the file, and a ``<stem>/`` config folder next to the file must be found without
``--config``. Nothing is downloaded, and no connection is even attempted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from types import SimpleNamespace

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import numpy as np  # noqa: E402
import requests  # noqa: E402
from a1111_checkpoint import config_only_copy, save_as_a1111_checkpoint  # noqa: E402
from conftest import pixel_array, txt2img_reply  # noqa: E402
from tiny_sd import build_tiny_sd  # noqa: E402

REQUEST = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3, "cfg_scale": 7.0, "sampler_name": "Euler",
           "seed": 42}
COMPONENTS = ("unet", "vae", "text_encoder")

# Tiny models run fastest on one thread (conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny model as a diffusers folder, as an A1111 checkpoint file, and its configs alone."""
    root = tmp_path_factory.mktemp("single-file")
    folder = build_tiny_sd(root / "tiny-sd")
    return SimpleNamespace(folder=folder, file=save_as_a1111_checkpoint(folder, root / "my-model.safetensors"),
                           configs=config_only_copy(folder, root / "tiny-sd-configs"))


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and every connection to anything but this machine refused
    (and recorded: the list must stay empty)."""
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    attempts = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    local = ("127.0.0.1", "localhost", "::1")

    def getaddrinfo(host, *args, **kwargs):
        if host not in local:
            attempts.append(host)
            raise OSError(f"network access attempted: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in local:
            attempts.append(address)
            raise OSError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


@contextlib.contextmanager
def library_warnings():
    """The warnings diffusers and transformers log meanwhile (e.g. "weights ... not used")."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def txt2img(url: str) -> dict:
    return txt2img_reply(url, REQUEST)


def test_the_file_has_the_a1111_layout(models):
    from safetensors import safe_open

    with safe_open(str(models.file), "pt") as checkpoint:
        keys = set(checkpoint.keys())
        vae_attention = checkpoint.get_slice("first_stage_model.decoder.mid.attn_1.q.weight").get_shape()
    unet, vae, clip = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."
    assert all(key.startswith((unet, vae, clip)) for key in keys)
    assert clip + "embeddings.position_embedding.weight" in keys  # how diffusers recognises SD 1.x's CLIP
    # diffusers would read some wrong names too (conv_shortcut; an upsampler at .1.conv after an attention)
    assert {unet + name for name in ("input_blocks.0.0.weight", "input_blocks.2.0.op.weight",
                                     "input_blocks.3.0.skip_connection.weight", "middle_block.1.proj_in.weight",
                                     "output_blocks.1.2.conv.weight", "output_blocks.3.0.skip_connection.weight",
                                     "out.2.weight")} <= keys
    assert {vae + name for name in ("decoder.up.1.upsample.conv.weight", "decoder.up.1.block.0.nin_shortcut.weight",
                                    "encoder.down.2.block.0.nin_shortcut.weight",
                                    "encoder.down.0.downsample.conv.weight")} <= keys
    assert len(vae_attention) == 4  # LDM's 1x1 convolution
    assert not any(path.suffix == ".safetensors" for path in models.configs.rglob("*"))
    assert (models.configs / "model_index.json").is_file() and (models.configs / "tokenizer").is_dir()


def test_the_names_are_those_of_sd_15_for_its_shape():
    """With SD 1.5's blocks (4 x 2 layers, attention in 3 of them; tiny channels) the names are those
    of real SD 1.5 checkpoints (as diffusers' convert_diffusers_to_original_stable_diffusion.py writes)."""
    import torch
    from a1111_checkpoint import unet_key, vae_key
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, layers_per_block=2, block_out_channels=(8, 16, 32, 32),
                                norm_num_groups=4, cross_attention_dim=8, attention_head_dim=4)  # SD 1.x block types
    vae = AutoencoderKL(block_out_channels=(8, 16, 32, 32), layers_per_block=2, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    unet_keys = {unet_key(key, dict(unet.config)) for key in unet.state_dict()}
    vae_keys = {vae_key(key, dict(vae.config)) for key in vae.state_dict()}
    assert (len(unet_keys), len(vae_keys)) == (686, 248)  # as in v1-5-pruned-emaonly.safetensors
    assert {"input_blocks.3.0.op.weight", "input_blocks.4.0.skip_connection.weight", "input_blocks.8.1.proj_out.bias",
            "input_blocks.11.0.out_layers.3.weight", "middle_block.2.emb_layers.1.weight",
            "output_blocks.2.1.conv.weight", "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.bias",
            "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight", "output_blocks.11.0.skip_connection.weight",
            "out.2.weight", "time_embed.2.bias"} <= unet_keys
    assert not any(key.startswith(("input_blocks.10.1", "input_blocks.12", "output_blocks.0.1", "output_blocks.12"))
                   for key in unet_keys)
    assert {"encoder.down.1.block.0.nin_shortcut.weight", "encoder.down.2.downsample.conv.weight",
            "encoder.norm_out.bias", "decoder.up.0.block.0.nin_shortcut.weight", "decoder.up.0.block.2.conv2.weight",
            "decoder.up.3.upsample.conv.weight", "decoder.mid.block_2.norm1.weight",
            "decoder.mid.attn_1.proj_out.weight", "decoder.norm_out.weight"} <= vae_keys
    assert not any(key.startswith(("encoder.down.3.downsample", "decoder.up.0.upsample")) for key in vae_keys)


def test_from_single_file_reads_back_every_weight_offline(models, no_network):
    import torch
    from diffusers import StableDiffusionPipeline

    with library_warnings() as warnings:
        pipe = StableDiffusionPipeline.from_single_file(str(models.file), config=str(models.configs),
                                                        local_files_only=True)
    original = StableDiffusionPipeline.from_pretrained(str(models.folder), local_files_only=True)
    for name in COMPONENTS:
        loaded, expected = getattr(pipe, name).state_dict(), getattr(original, name).state_dict()
        assert sorted(loaded) == sorted(expected), name
        # a weight missing from the file is left on the "meta" device (or random) without an error
        wrong = [key for key, tensor in expected.items() if loaded[key].is_meta or loaded[key].dtype != tensor.dtype
                 or not torch.equal(loaded[key], tensor)]
        assert not wrong, (name, wrong[:5])
    assert type(pipe.scheduler) is type(original.scheduler)
    assert dict(pipe.scheduler.config) == dict(original.scheduler.config)
    assert pipe.tokenizer("a red fox").input_ids == original.tokenizer("a red fox").input_ids
    assert [record.getMessage() for record in warnings] == []
    assert no_network == []


def test_the_server_makes_the_same_images_from_the_file(models, no_network):
    from helpers.infotext import parse_infotext
    from sdserver import serve_in_thread
    from sdserver.engines import get_engine

    engine = get_engine("diffusers", model=str(models.file), config=str(models.configs), decoder="full")
    with serve_in_thread(engine=engine) as handle:
        reply = txt2img(handle.url)
        listed = requests.get(f"{handle.url}/sdapi/v1/sd-models", timeout=30).json()
    reference = get_engine("diffusers", model=str(models.folder), decoder="full")
    with serve_in_thread(engine=reference) as handle:
        expected = txt2img(handle.url)

    image, expected_image = pixel_array(reply["images"][0]), pixel_array(expected["images"][0])
    assert image.shape == expected_image.shape == (64, 64, 3) and image.std() > 1
    assert int(np.abs(image - expected_image).max()) <= 1

    sha = hashlib.sha256(models.file.read_bytes()).hexdigest()
    settings = parse_infotext(json.loads(reply["info"])["infotexts"][0])
    assert settings["Model"] == "my-model" and settings["Model hash"] == sha[:10]  # as A1111 names a file
    title = f"my-model.safetensors [{sha[:10]}]"
    assert title in [entry["title"] for entry in listed]
    entry = next(entry for entry in listed if entry["title"] == title)
    assert entry["model_name"] == "my-model" and entry["hash"] == sha[:10] and entry["sha256"] == sha
    assert no_network == []


def test_a_config_folder_named_like_the_file_is_found_without_config(models, tmp_path, no_network):
    import torch
    from safetensors.torch import load_file

    from sdserver.engines import get_engine

    file = shutil.copy(models.file, tmp_path / "my-model.safetensors")
    config_only_copy(models.folder, tmp_path / "my-model")  # my-model.safetensors + my-model/
    engine = get_engine("diffusers", model=str(file), decoder="full")
    assert engine.model_name == "my-model" and engine.model_title.startswith("my-model.safetensors [")
    unet = load_file(str(models.folder / "unet" / "diffusion_pytorch_model.safetensors"))
    weight = engine.pipe.unet.conv_in.weight.detach()  # in the engine's dtype (bfloat16 on a CPU)
    assert torch.equal(weight, unet["conv_in.weight"].to(weight.dtype))
    assert no_network == []
