"""The diffusers engine on this CPU: seconds per 512x512 image, and the server's overhead.

The model has SD-Turbo's architecture (the engine's default model: SD 2.1-base UNet, the SD VAE,
the OpenCLIP ViT-H text encoder, 1.3 B parameters) with random weights built from the published
configs; timing does not depend on the weight values. The tiny
decoder is an AutoencoderTiny with TAESD's architecture. Settings are SD-Turbo's: guidance 0
(one UNet call per step), 1 and 4 steps. Precision: bfloat16 where the CPU computes it natively
(the engine's "auto"), else float32.

It takes minutes and about 7 GB of RAM (float32); the models are built once.

LoRA on vs off: a random rank-8 LoRA on every attention projection of that UNet (diffusers' format,
made here), the same 1-step image with ``<lora:bench:0.8>`` and without, side by side over HTTP after
the LoRA's first load (which is timed on its own).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time

from .timing import compare, line

PROMPT = "a white lighthouse on black rocks in a storm, oil painting"
SIZE = 512


def clip_tokenizer():
    """SD 2.x's tokenizer (pads with "!", id 0), built from the BPE file open_clip ships."""
    import gzip

    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    bpe = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as folder:  # files: the way that works in transformers 4 and 5
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as handle:
            json.dump({token: i for i, token in enumerate(vocab)}, handle, ensure_ascii=False)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as handle:
            handle.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77, pad_token="!", local_files_only=True)


def build_sd_turbo_shaped(dtype):
    """A StableDiffusionPipeline with SD-Turbo's architecture and random weights, plus a random TAESD."""
    import torch
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        norm_num_groups=32, norm_eps=1e-5, act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
        upcast_attention=False)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), norm_num_groups=32, act_fn="silu", scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=512, layer_norm_eps=1e-5,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=0))
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="trailing")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    tiny = AutoencoderTiny()  # its defaults are TAESD's layout
    if dtype != torch.float32:
        pipe, tiny = pipe.to(dtype=dtype), tiny.to(dtype=dtype)
    return pipe, tiny


def write_bench_lora(unet, folder: str, rank: int = 8) -> str:
    """A random LoRA (diffusers' key names) on every attention projection of ``unet``; returns its name."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for name, module in unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and isinstance(module, torch.nn.Linear):
            tensors[f"unet.{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.01
            tensors[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.01
    save_file(tensors, os.path.join(folder, "bench.safetensors"))
    return "bench"


def run(rounds: int = 1, overhead_rounds: int = 2) -> list[str]:
    """``rounds`` timed runs per setting (median), ``overhead_rounds`` alternating server/direct pairs."""
    import requests
    import torch
    from diffusers import EulerDiscreteScheduler

    from sdserver import serve_in_thread
    from sdserver.engines.devices import cpu_has_fast_bf16
    from sdserver.engines.diffusers_engine import DiffusersEngine

    bf16 = cpu_has_fast_bf16()
    dtype = torch.bfloat16 if bf16 else torch.float32
    started = time.perf_counter()
    pipe, tiny = build_sd_turbo_shaped(dtype)
    built = time.perf_counter() - started
    full = pipe.vae
    base = dict(pipe.scheduler.config)

    def direct(steps: int, seed: int = 1):
        pipe.scheduler = EulerDiscreteScheduler.from_config(base)  # what the server does per request
        with torch.inference_mode():
            pipe(PROMPT, num_inference_steps=steps, guidance_scale=0.0, width=SIZE, height=SIZE,
                 generator=torch.Generator().manual_seed(seed))

    def timed(steps: int) -> float:
        times = []
        for i in range(rounds):
            t0 = time.perf_counter()
            direct(steps, seed=i)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    out = [f"diffusers engine on {platform.machine()} CPU, {torch.get_num_threads()} torch threads, "
           f"{'bfloat16 (native bf16)' if bf16 else 'float32 (no native bf16 on this CPU)'}, load average "
           f"{os.getloadavg()[0]:.1f}; SD-Turbo-shaped model with random weights built in {built:.0f} s"]
    for name, decoder in (("tiny (TAESD)", tiny), ("full VAE", full)):
        pipe.vae = decoder
        direct(1)  # warm-up: first-call costs (kernel selection, allocations)
        one, four = timed(1), timed(4)
        out.append(f"diffusers {SIZE}x{SIZE}, {name} decoder: 1 step {one:.1f} s, 4 steps {four:.1f} s per image "
                   f"(UNet about {(four - one) / 3:.1f} s per step)")

    # The server's overhead: the same 1-step image over HTTP (A1111 protocol, PNG + infotext) vs the call.
    pipe.vae = full
    engine = DiffusersEngine(pipeline=pipe, decoder=tiny)
    generate, inside = engine.generate, []

    def timed_generate(job, on_step):  # the engine's own time, measured inside each request
        t0 = time.perf_counter()
        images = generate(job, on_step)
        inside.append(time.perf_counter() - t0)
        return images

    engine.generate = timed_generate
    overheads = []
    lora_dir = tempfile.mkdtemp(prefix="bench-lora-")
    lora = write_bench_lora(pipe.unet, lora_dir)
    with serve_in_thread(engine=engine, lora_dir=lora_dir) as server:
        payload = {"prompt": PROMPT, "steps": 1, "cfg_scale": 0, "width": SIZE, "height": SIZE, "seed": 1,
                   "sampler_name": "Euler"}

        def via_server():
            t0 = time.perf_counter()
            reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json=payload, timeout=600)
            reply.raise_for_status()
            overheads.append(time.perf_counter() - t0 - inside[-1])

        t_server, t_direct = compare(via_server, lambda: direct(1), overhead_rounds)

        def with_lora(tag: str = f" <lora:{lora}:0.8>"):
            reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json={**payload, "prompt": PROMPT + tag},
                                  timeout=600)
            reply.raise_for_status()

        t0 = time.perf_counter()
        with_lora()  # the first use loads the file into the pipeline
        first_load = time.perf_counter() - t0
        t_lora, t_plain = compare(with_lora, lambda: with_lora(""), overhead_rounds)
        engine.generate = generate  # hires fix calls the engine's own generate for its two passes
        img2img_and_hires = second_passes(server.url, rounds)
    out.append(line(f"diffusers {SIZE}x{SIZE} 1 step, tiny decoder", "kit server (HTTP)", t_server,
                    "StableDiffusionPipeline call", t_direct))
    extra_ms = statistics.median(overheads) * 1000
    out.append(f"diffusers server: HTTP, A1111 protocol and PNG encoding add {extra_ms:.0f} ms per {SIZE}x{SIZE} image "
               "to the engine's own time (measured inside the same requests; the ratio above also holds machine noise)")
    out.append(line(f"diffusers {SIZE}x{SIZE} 1 step, LoRA (rank 8, every attention projection) after its first load",
                    "with <lora:bench:0.8>", t_lora, "without", t_plain)
               + f"; the first request with it (loading the file) took {first_load:.1f} s")
    return out + img2img_and_hires


def second_passes(url: str, rounds: int = 1, size: int = 256, steps: int = 4, strength: float = 0.5,
                  hr_steps: int = 2) -> list[str]:
    """img2img vs txt2img at the same size and steps, and hires fix on vs off, over the same server (HTTP,
    the tiny decoder), alternating. ``size`` is smaller than the rest of the bench to keep it to about a minute
    on 2 cores; hires fix doubles it for its second pass (``hr_steps`` steps, as A1111 runs them)."""
    import base64
    import io

    import requests
    from PIL import Image

    from sdserver.generation import img2img_steps

    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize((size, size)).save(buffer, format="PNG")
    init = base64.b64encode(buffer.getvalue()).decode()
    base = {"prompt": PROMPT, "steps": steps, "cfg_scale": 0, "width": size, "height": size, "seed": 1,
            "sampler_name": "Euler"}

    def post(path: str, **fields):
        def call():
            requests.post(f"{url}/sdapi/v1/{path}", json={**base, **fields}, timeout=900).raise_for_status()
        return call

    plain = post("txt2img")
    t_i2i, t_t2i = compare(post("img2img", init_images=[init], denoising_strength=strength), plain, rounds, warmup=0)
    run_steps = img2img_steps(steps, strength, False)[1]
    hires = post("txt2img", enable_hr=True, hr_scale=2, denoising_strength=strength, hr_second_pass_steps=hr_steps,
                 hr_upscaler="Latent")
    t_hr, t_plain = compare(hires, plain, rounds, warmup=0)
    return [
        line(f"diffusers {size}x{size} {steps} steps, denoising {strength}", "img2img", t_i2i, "txt2img", t_t2i)
        + f" (A1111's img2img runs {run_steps} of the {steps} steps, plus a full-VAE encode of the init image)",
        line(f"diffusers {size}x{size} {steps} steps", f"hires fix on (x2, {hr_steps} steps at {2 * size}x{2 * size})",
             t_hr, "off", t_plain) + " (the second pass has 4x the pixels)",
    ]


if __name__ == "__main__":  # python -m bench.bench_diffusers
    for text in run():
        print(text, flush=True)
