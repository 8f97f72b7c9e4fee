"""A tiny Stable Diffusion pipeline with random weights, built from configs and saved to a folder.

The diffusers engine's tests load it through the same path users take with a real model
(``--model /path/to/folder``). Nothing is downloaded: the CLIP tokenizer is built from the BPE
file that open_clip ships, and every weight is random, so the images
are noise, but seeds, batches, samplers, progress and interrupt behave as with a real model.

    >>> folder = build_tiny_sd("/tmp/tiny-sd")            # doctest: +SKIP
    >>> taesd = build_tiny_taesd("/tmp/tiny-taesd")       # doctest: +SKIP

Sizes: about 8.5 MB on disk (most of it the tokenizer and the 49408-entry token embedding); a
64x64 image takes a few hundredths of a second per step on a laptop CPU.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and BPE merges, built from open_clip's ``bpe_simple_vocab_16e6.txt.gz``."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    bpe = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]  # 48894 merges
    merges = [tuple(line.split()) for line in lines]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(merge) for merge in merges] + ["<|startoftext|>", "<|endoftext|>"]  # 49408 entries
    return {token: i for i, token in enumerate(vocab)}, merges


def clip_tokenizer(**options):
    """An SD 1.x-style CLIPTokenizer (pads with <|endoftext|>, 77 tokens); ``options`` go to it
    (e.g. ``pad_token="!"`` for SD 2.x). Built from vocab.json and merges.txt files, the way that
    works in transformers 4 and 5 alike."""
    import json
    import tempfile

    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        Path(folder, "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                              encoding="utf-8")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77, local_files_only=True, **options)


def build_tiny_sd(folder: str | os.PathLike, seed: int = 0, scheduler: str = "EulerDiscreteScheduler") -> Path:
    """Build a tiny SD 1.x-shaped pipeline (random weights) and ``save_pretrained`` it to ``folder``.

    The VAE has 4 blocks, so one latent pixel is 8x8 image pixels, as in real SD (the UNet's
    attention cost grows with the square of the latent's pixel count, so this keeps notebook-sized
    images fast). ``seed`` changes
    the weights, e.g. to make a second, different "model" for model-switch tests.
    """
    import diffusers
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
        block_out_channels=(8, 8, 16, 16), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407))
    scheduler_class = getattr(diffusers, scheduler, EulerDiscreteScheduler)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
        scheduler=scheduler_class(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_taesd(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny AutoencoderTiny (TAESD's architecture, fewer channels) that matches build_tiny_sd's
    8x latent scale, saved with ``save_pretrained``."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    taesd = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                            num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4)
    folder = Path(folder)
    taesd.save_pretrained(folder)
    return folder


def build_tiny_lora(model_folder: str | os.PathLike, folder: str | os.PathLike, name: str, seed: int = 0,
                    kohya: bool = False) -> Path:
    """A LoRA for build_tiny_sd's model, made with peft (rank 4 on the UNet's and the text encoder's
    attention, random non-zero ``lora_B`` so it changes the pixels), saved as ``folder/name.safetensors``:
    diffusers' format (``unet....lora_A.weight``) or, with ``kohya=True``, A1111/kohya's
    (``lora_unet_..._to_q.lora_down.weight``, ``.lora_up.weight``, ``.alpha``) with the same numbers."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    pipe = StableDiffusionPipeline.from_pretrained(model_folder, safety_checker=None)
    torch.manual_seed(seed)
    rank = alpha = 4  # scale alpha/rank = 1 (diffusers' format does not store alpha)
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    # peft directly (transformers 5's add_adapter wants a newer peft than diffusers does)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False,
                                       target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]), pipe.text_encoder)
    # lora_B x 8: a clear change even on the random model's flat, half-saturated images
    unet, text = ({key: value * (8 if "lora_B" in key else 1) for key, value in get_peft_model_state_dict(part).items()}
                  for part in (pipe.unet, pipe.text_encoder))
    # LoRA files name CLIP's layers "text_model.encoder...", as transformers 4 did (5 has no text_model level)
    text = {key if key.startswith("text_model.") else f"text_model.{key}": value for key, value in text.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not kohya:
        StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=unet, text_encoder_lora_layers=text,
                                                  weight_name=f"{name}.safetensors")
        return folder / f"{name}.safetensors"
    tensors = {}
    for prefix, layers in (("lora_unet_", unet), ("lora_te_", text)):
        for key, value in layers.items():  # e.g. down_blocks.1.attentions.0....attn1.to_q.lora_A.weight
            module, kind = key.rsplit(".lora_", 1)
            module = prefix + module.replace(".", "_")
            tensors[f"{module}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value.contiguous()
            tensors[f"{module}.alpha"] = torch.tensor(float(alpha))
    save_file(tensors, str(folder / f"{name}.safetensors"), metadata={"ss_network_module": "networks.lora"})
    return folder / f"{name}.safetensors"


if __name__ == "__main__":  # python tests/tiny_sd.py /tmp/tiny-sd
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-sd")
    print(build_tiny_sd(target), build_tiny_taesd(target.with_name(target.name + "-taesd")))
