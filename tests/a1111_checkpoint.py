"""Write a diffusers Stable Diffusion 1.x folder as one A1111-style ``.safetensors`` checkpoint.

The tests use it to give diffusers' ``from_single_file`` a real single-file checkpoint without
downloading one. It is the inverse of the conversion ``from_single_file`` does: the UNet, VAE and
CLIP text encoder weights go into one file under the original LDM names that A1111, ComfyUI and
civitai checkpoints use (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.text_model.*``). It is the mapping of diffusers'
``scripts/convert_diffusers_to_original_stable_diffusion.py``, computed from the folder's configs
(number of blocks, ``layers_per_block``) instead of fixed to SD 1.5's 4 blocks x 2 layers, so the
tiny models of tests/tiny_sd.py convert too. (SD 2.x's OpenCLIP layout is not written.)

    >>> file = save_as_a1111_checkpoint("tiny-sd", "my-model.safetensors")  # doctest: +SKIP
    >>> configs = config_only_copy("tiny-sd", "tiny-sd-configs")  # what users pass as --config  # doctest: +SKIP

Every weight gets an LDM name or the conversion raises; nothing is dropped. Tensors are written
unchanged, except the VAE's mid-block attention weights, which LDM stores as 1x1 convolutions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".h5")

# diffusers name -> LDM name, for the parts of a block
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}  # norm1, conv1, norm2, conv2 keep their names
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
VAE_TOP = {"conv_norm_out": "norm_out"}  # conv_in, conv_out, quant_conv, post_quant_conv keep theirs


def read_weights(folder: Path) -> dict:
    """All tensors of one component folder (its non-variant .safetensors files, shards merged)."""
    from safetensors.torch import load_file

    files = [f for f in sorted(folder.glob("*.safetensors")) if not re.search(r"\.(fp16|bf16)\.", f.name)]
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    weights = {}
    for file in files:
        weights.update(load_file(str(file)))
    return weights


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def rename_part(rest: str, names: dict[str, str]) -> str:
    """``rest`` ("norm1.weight") with its leading module name renamed by ``names``."""
    for old, new in names.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_key(key: str, config: dict) -> str:
    """The LDM name of a diffusers UNet2DConditionModel weight."""
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError("only an int layers_per_block is supported")
    blocks = len(config["down_block_types"])
    for old, new in UNET_TOP.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    if match := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        index = 1 + block * (layers + 1) + layer
        if kind == "resnets":
            return f"input_blocks.{index}.0.{rename_part(rest, UNET_RESNET)}"
        return f"input_blocks.{index}.1.{rest}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(match[1]) * (layers + 1) + layers}.0.op.{match[2]}"
    if match := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        kind, index, rest = match[1], int(match[2]), match[3]
        if kind == "resnets":  # resnet, attention, resnet
            return f"middle_block.{2 * index}.{rename_part(rest, UNET_RESNET)}"
        return f"middle_block.1.{rest}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        index = block * (layers + 1) + layer  # up blocks have layers_per_block + 1 layers
        if kind == "resnets":
            return f"output_blocks.{index}.0.{rename_part(rest, UNET_RESNET)}"
        return f"output_blocks.{index}.1.{rest}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(match[1])
        if block >= blocks - 1:
            raise ValueError(f"unexpected upsampler in the last up block: {key}")
        has_attention = "CrossAttn" in config["up_block_types"][block]
        return f"output_blocks.{block * (layers + 1) + layers}.{2 if has_attention else 1}.conv.{match[2]}"
    raise ValueError(f"no LDM name for the UNet weight {key}")


def vae_key(key: str, config: dict) -> str:
    """The LDM name of a diffusers AutoencoderKL weight."""
    up_blocks = len(config["up_block_types"])
    if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{match[1]}.block.{match[2]}.{rename_part(match[3], VAE_RESNET)}"
    if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{match[1]}.downsample.conv.{match[2]}"
    if match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):  # LDM counts up blocks backwards
        return f"decoder.up.{up_blocks - 1 - int(match[1])}.block.{match[2]}.{rename_part(match[3], VAE_RESNET)}"
    if match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{up_blocks - 1 - int(match[1])}.upsample.conv.{match[2]}"
    if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{match[1]}.mid.block_{int(match[2]) + 1}.{rename_part(match[3], VAE_RESNET)}"
    if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{match[1]}.mid.attn_1.{rename_part(match[2], VAE_ATTENTION)}"
    if match := re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(weight|bias)", key):
        return f"{match[1]}.{VAE_TOP.get(match[2], match[2])}.{match[3]}"
    if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
        return key
    raise ValueError(f"no LDM name for the VAE weight {key}")


def save_as_a1111_checkpoint(diffusers_folder: str | os.PathLike, file: str | os.PathLike) -> Path:
    """Write the UNet, VAE and text encoder of a diffusers SD 1.x folder as one LDM-layout
    ``.safetensors`` file (what A1111 loads, and diffusers' ``from_single_file`` reads back)."""
    from safetensors.torch import save_file

    folder, file = Path(diffusers_folder), Path(file)
    checkpoint = {}

    def put(key, tensor):
        if key in checkpoint:
            raise ValueError(f"two weights map to {key}")
        checkpoint[key] = tensor.contiguous()

    unet_config = read_config(folder / "unet")
    for key, tensor in read_weights(folder / "unet").items():
        put(UNET_PREFIX + unet_key(key, unet_config), tensor)

    vae_config = read_config(folder / "vae")
    for key, tensor in read_weights(folder / "vae").items():
        if ".mid_block.attentions." in key and key.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # LDM: 1x1 convolutions, diffusers: linear layers
        put(VAE_PREFIX + vae_key(key, vae_config), tensor)

    for key, tensor in read_weights(folder / "text_encoder").items():
        # transformers 5.6+ saves CLIPTextModel without the "text_model." level; older ones with it
        put(CLIP_PREFIX + key.removeprefix("text_model."), tensor)

    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint, str(file), metadata={"format": "pt"})
    return file


def config_only_copy(diffusers_folder: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """A copy of a diffusers folder without its weight files: model_index.json, each component's
    config.json, scheduler/ and tokenizer/. That is what ``--config`` (diffusers' ``config=``) needs."""
    source, dest = Path(diffusers_folder), Path(dest)
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES + (".index.json",)):
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest
