"""Inpainting: img2img with a ``mask``, the way A1111 1.10 does it with an ordinary (not an inpainting) model.

What the request's fields do (A1111's img2img tab, "Inpaint"):

* ``mask``: white is repainted, black kept (an RGBA mask's alpha is used when it has one); ``mask_round``
  makes it black and white first; ``inpainting_mask_invert`` swaps the two ("Inpaint not masked");
* ``mask_blur`` (or ``mask_blur_x``/``mask_blur_y``): a Gaussian blur of the mask's edge, in pixels;
* ``inpaint_full_res`` ("Only masked"): the mask's bounding box plus ``inpaint_full_res_padding`` pixels,
  widened to the output's shape, is cut out, scaled to width x height, repainted, and scaled back into place;
* ``inpainting_fill``, what the masked area starts from: 0 "fill" (the surrounding colours, smoothed), 1
  "original", 2 "latent noise", 3 "latent nothing" (zeros);
* the engine holds the unmasked latents at the start image's (noised to each step's level, see the diffusers
  engine), and the result is laid over the start image through the blurred mask, so what is not masked
  stays as it was.

:func:`prepare` turns a request into an :class:`Inpaint` (the images the engine starts from, its latent mask,
the infotext entries); :meth:`Inpaint.finish` puts each result back over its start image.

    >>> from PIL import Image
    >>> mask = Image.new("L", (64, 64)); mask.paste(255, (16, 16, 48, 48))
    >>> job = prepare([Image.new("RGB", (64, 64), "red")], mask, MaskSettings(fill=0), 64, 64)
    >>> job.infotext
    {'Mask blur': 4, 'Masked content': 'fill'}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image, ImageChops, ImageFilter, ImageOps

MASKED_CONTENT = {0: "fill", 2: "latent noise", 3: "latent nothing"}  # 1, "original", writes no entry
EMPTY_MASK = 'Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.'  # A1111's words


@dataclass
class MaskSettings:
    """The request's mask fields (defaults: A1111's)."""

    blur_x: int = 4
    blur_y: int = 4
    invert: bool = False
    fill: int = 1
    full_res: bool = False
    padding: int = 32
    round: bool = True


    @classmethod
    def of(cls, req) -> "MaskSettings":
        """From an img2img request (sdserver/models.py): ``mask_blur``, when given, sets both blurs."""
        blur = req.mask_blur
        blur_x, blur_y = (blur, blur) if isinstance(blur, int) else (req.value("mask_blur_x"), req.value("mask_blur_y"))
        return cls(blur_x=blur_x, blur_y=blur_y, invert=bool(req.value("inpainting_mask_invert")),
                   fill=req.value("inpainting_fill"), full_res=bool(req.value("inpaint_full_res")),
                   padding=req.value("inpaint_full_res_padding"), round=bool(req.value("mask_round")))


@dataclass
class Inpaint:
    """One request's inpainting: the engine's start images and latent mask, and what finishing needs."""

    starts: list[Image.Image]  # what the engine starts from (cut out and scaled for "Only masked")
    latent_mask: Image.Image | None  # L, width x height: white where the engine repaints
    fill: int
    originals: list[Image.Image]  # the start images at full size, to lay the results over
    overlay_mask: Image.Image  # L, the originals' size: white where the results show
    paste_box: tuple[int, int, int, int] | None = None  # "Only masked": where the cut-out goes back
    infotext: dict = field(default_factory=dict)

    def finish(self, images: list[Image.Image]) -> list[Image.Image]:
        """The results put back: scaled into the cut-out's place ("Only masked"), then shown only where the
        mask is white (its blurred edge blends), the start image everywhere else."""
        done = []
        for index, image in enumerate(images):
            original = self.originals[index % len(self.originals)]
            if self.paste_box is not None:
                x1, y1, x2, y2 = self.paste_box
                base = original.copy()
                base.paste(image.resize((x2 - x1, y2 - y1), Image.LANCZOS), (x1, y1))
                image = base
            elif image.size != original.size:
                image = image.resize(original.size, Image.LANCZOS)
            done.append(Image.composite(image.convert("RGB"), original, self.overlay_mask))
        return done


def binary_mask(mask: Image.Image, round_it: bool = True) -> Image.Image:
    """The mask as one channel: an RGBA mask's alpha where it uses it, else its grey; black and white with
    ``round_it`` (threshold at half)."""
    if mask.mode in ("RGBA", "LA") and mask.getextrema()[-1] != (255, 255):
        mask = mask.getchannel("A")
    mask = mask.convert("L")
    return mask.point(lambda value: 255 if value >= 128 else 0) if round_it else mask


def blurred(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """The mask's edge blurred ``blur_x`` and ``blur_y`` pixels: a Gaussian along each axis, 2.5 sigma wide,
    the border mirrored, as A1111 blurs it (numpy only: the preview engine needs no scipy or OpenCV)."""
    import numpy as np

    pixels = np.asarray(mask, dtype=np.float32)
    for axis, sigma in ((1, blur_x), (0, blur_y)):
        if sigma > 0:
            radius = int(2.5 * sigma + 0.5)
            kernel = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2.0 * sigma * sigma))
            pad = [(0, 0), (0, 0)]
            pad[axis] = (radius, radius)
            padded = np.pad(pixels, pad, mode="reflect")
            pixels = np.apply_along_axis(np.convolve, axis, padded, kernel / kernel.sum(), mode="valid")
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def crop_box(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The mask's bounding box plus ``padding``, widened to the output's aspect ratio where the picture has
    room (so scaling the cut-out to width x height does not distort it); None for an empty mask."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1 = max(box[0] - padding, 0), max(box[1] - padding, 0)
    x2, y2 = min(box[2] + padding, mask.width), min(box[3] + padding, mask.height)
    want = width / height
    if (x2 - x1) / (y2 - y1) < want:  # too tall: widen
        x1, x2 = _widen(x1, x2, round((y2 - y1) * want), mask.width)
    else:  # too wide: make taller
        y1, y2 = _widen(y1, y2, round((x2 - x1) / want), mask.height)
    return x1, y1, x2, y2


def _widen(low: int, high: int, size: int, limit: int) -> tuple[int, int]:
    """[low, high) grown to ``size`` around its middle, kept inside [0, limit)."""
    size = min(size, limit)
    low = max(0, min((low + high - size) // 2, limit - size))
    return low, low + size


def filled(image: Image.Image, mask: Image.Image) -> Image.Image:
    """"fill": the masked area painted with the colours around it, smoothed out (blur, then restore what is
    not masked, a few times from coarse to fine), so the model starts from a plausible colour, not the
    thing being replaced."""
    out = image.copy()
    keep = ImageOps.invert(mask)
    for radius in (64, 32, 16, 8, 4, 2, 1):
        out = out.filter(ImageFilter.GaussianBlur(radius))
        out.paste(image, mask=keep)
    return out


def prepare(inits: list[Image.Image], mask: Image.Image, settings: MaskSettings, width: int, height: int,
            latent_mask: Image.Image | None = None) -> Inpaint | None:
    """An :class:`Inpaint` for start images already prepared at ``width`` x ``height`` (the request's
    resize mode) and ``mask``, the request's mask made one channel (:func:`binary_mask`), then resized the
    same way; ``latent_mask``: the request's ``latent_mask`` (the one the latents use, if it differs),
    likewise. None for "Only masked" with an empty mask: A1111 then makes a plain img2img (EMPTY_MASK)."""
    infotext = {}
    mask = mask.convert("L")
    if settings.invert:
        mask = ImageOps.invert(mask)
        infotext["Mask mode"] = "Inpaint not masked"
    if settings.blur_x > 0 or settings.blur_y > 0:
        mask = blurred(mask, settings.blur_x, settings.blur_y)
        if settings.blur_x == settings.blur_y:  # A1111 names one blur only
            infotext["Mask blur"] = settings.blur_x
    box = None
    if settings.full_res:
        box = crop_box(mask, settings.padding, width, height)
        if box is None:  # A1111 then makes a plain img2img and says so
            return None
    if box is not None:
        overlay = mask
        engine_mask = ImageOps.pad(mask.crop(box), (width, height), Image.LANCZOS)
        starts = [ImageOps.pad(init.crop(box), (width, height), Image.LANCZOS) for init in inits]
        infotext.update({"Inpaint area": "Only masked", "Masked area padding": settings.padding})
    else:
        engine_mask = mask  # A1111 doubles the blurred mask for the overlay: the repainted area shows fully
        overlay = ImageChops.add(mask, mask)
        starts = list(inits)
    latents = latent_mask.convert("L") if latent_mask is not None else engine_mask
    if settings.fill != 1:
        starts = [filled(start, latents) for start in starts]
    if settings.fill in MASKED_CONTENT:
        infotext["Masked content"] = MASKED_CONTENT[settings.fill]
    return Inpaint(starts=starts, latent_mask=latents, fill=settings.fill, originals=list(inits),
                   overlay_mask=overlay, paste_box=box, infotext=infotext)
