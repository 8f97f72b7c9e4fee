"""Starting noise from A1111 seeds, and cheap live previews from latents (diffusers engine).

Seeds: image i of a request gets its own ``torch.Generator`` seeded with ``all_seeds[i]``, so an
image depends only on its own seed: a batch of 4 from seed 100 gives the same pictures as four
single calls with seeds 100..103. The noise is always drawn on the CPU in float32, so a seed
gives the same start on every machine (A1111's "RNG: CPU" idea); ancestral samplers keep drawing
their per-step noise from the same generators.

Variations (``subseed_strength`` > 0) blend the seed's noise towards the subseed's noise along
the sphere, with A1111's own ``slerp``.

Previews: during sampling the server shows the model's current guess of the final image (x0, which
``watch_predictions`` records at every step; A1111 shows and, on interrupt, returns the same). Decoding
it with the VAE would cost as much as the image itself, so it is approximated by a fixed linear
map from the 4 latent channels to RGB (A1111's "Approx cheap" for SD 1.x/2.x).

    >>> noise, generators = initial_noise((4, 8, 8), seeds=[1, 2], subseeds=[3, 4], strength=0.0)
    >>> tuple(noise.shape), len(generators)
    ((2, 4, 8, 8), 2)
"""

from __future__ import annotations

import functools

# Rows are latent channels, columns R, G, B: the SD 1.x/2.x "latent -> RGB" approximation used by
# A1111's "Approx cheap" preview and ComfyUI's latent_formats.SD15.
SD_LATENT_RGB = [[0.298, 0.207, 0.208],
                 [0.187, 0.286, 0.173],
                 [-0.158, 0.189, 0.264],
                 [-0.184, -0.271, -0.473]]

PREVIEW_SIDE = 256  # previews are shown at most this big (like the preview engine's)


def slerp(val: float, low, high):
    """A1111's spherical interpolation between two noise tensors (``processing.slerp``), as is."""
    import torch

    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def initial_noise(shape: tuple[int, int, int], seeds: list[int], subseeds: list[int], strength: float):
    """Noise of shape (len(seeds), *shape) and one generator per image (they go on to the sampler).

    Each image's noise is what ``torch.randn((1, *shape), generator=Generator().manual_seed(seed))``
    gives, so it is also what diffusers itself would draw for that seed on the CPU in float32.
    """
    import torch

    generators, noises = [], []
    for index, seed in enumerate(seeds):
        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn((1, *shape), generator=generator, dtype=torch.float32)
        if strength > 0:
            sub = torch.Generator("cpu").manual_seed(int(subseeds[index]))
            subnoise = torch.randn((1, *shape), generator=sub, dtype=torch.float32)
            noise = slerp(float(strength), noise[0], subnoise[0])[None]
        generators.append(generator)
        noises.append(noise)
    return torch.cat(noises), generators


def latents_to_preview(latents) -> list:
    """PIL images (one per batch entry) from SD latents (B, 4, h, w), at most PREVIEW_SIDE a side."""
    import torch
    from PIL import Image

    factors = torch.tensor(SD_LATENT_RGB, dtype=torch.float32)
    rgb = torch.einsum("bchw,cr->brhw", latents.detach().float().cpu(), factors)
    rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
    images = []
    for item in rgb:
        image = Image.fromarray(item.permute(1, 2, 0).numpy())
        scale = max(1, PREVIEW_SIDE // max(image.size))
        images.append(image.resize((image.width * scale, image.height * scale), Image.BILINEAR))
    return images


def watch_predictions(scheduler) -> dict:
    """Record the scheduler's prediction of the finished image (x0) at every step.

    Most diffusers schedulers return it next to the next sample; the multistep DPM++ and UniPC
    solvers keep it as their latest model output; for PLMS it is computed from the noise estimate.
    A1111 shows (and returns on interrupt) the same thing: the denoised guess, not the noisy sample.
    """
    import torch

    seen: dict = {"x0": None}
    original = scheduler.step
    x0_solver = (getattr(scheduler.config, "algorithm_type", "") in ("dpmsolver++", "sde-dpmsolver++")
                 or getattr(scheduler.config, "predict_x0", False))

    @functools.wraps(original)  # keeps the signature: the pipeline passes generator/eta only if step takes them
    def step(model_output, timestep, sample, *args, **kwargs):
        out = original(model_output, timestep, sample, *args, **kwargs)
        guess = None
        if isinstance(out, tuple):
            guess = out[1] if len(out) > 1 and torch.is_tensor(out[1]) else None
        else:
            guess = getattr(out, "pred_original_sample", None)
            guess = guess if guess is not None else getattr(out, "denoised", None)
        if guess is None and x0_solver and getattr(scheduler, "model_outputs", None):
            guess = scheduler.model_outputs[-1]
        if guess is None and hasattr(scheduler, "alphas_cumprod") and scheduler.init_noise_sigma == 1.0:
            alpha = scheduler.alphas_cumprod.to(sample.device)[int(timestep)].to(sample.dtype)
            if scheduler.config.prediction_type == "v_prediction":
                guess = alpha.sqrt() * sample - (1 - alpha).sqrt() * model_output
            else:
                guess = (sample - (1 - alpha).sqrt() * model_output) / alpha.sqrt()
        seen["x0"] = guess
        return out

    scheduler.step = step
    return seen
