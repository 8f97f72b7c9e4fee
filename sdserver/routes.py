"""The /sdapi/v1/* endpoints, registered the way A1111's ``modules/api/api.py`` does it.

Every handler is a plain ``def``, not ``async def``: FastAPI then runs each request in a worker
thread, so GET /progress and POST /interrupt answer while a txt2img request is busy in another
thread. Generation (and captioning) take one ``threading.Lock``: jobs run one at a time and a
second request simply waits, as in A1111 (its ``queue_lock``). What one request may cost is bounded by
``limits.Limits`` (422s name the limit and the flag that changes it).

Example:
    >>> from fastapi import FastAPI
    >>> from sdserver.engines import get_engine
    >>> api = SdApi(FastAPI(), get_engine("preview"))
    >>> api.samplers()[0]["name"]
    'DPM++ 2M'
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional

from fastapi import Body, Depends, FastAPI, HTTPException

from helpers.infotext import parse_infotext

from . import catalog, sd_upscale
from .engines import Engine
from .generation import img2img, txt2img
from .images import decode_image, encode_png_b64, open_image
from .limits import Limits, limit_error, surrogate_problem
from .loras import LoraLibrary
from .models import (
    Img2ImgRequest,
    InterrogateRequest,
    InterrogateResponse,
    PNGInfoRequest,
    PNGInfoResponse,
    ProgressResponse,
    TextToImageResponse,
    Txt2ImgRequest,
)
from .options import Options
from .state import JobState

# Entries of image.info that png-info leaves out of "items" (A1111's IGNORED_INFO_KEYS).
IGNORED_INFO_KEYS = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
                     "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity",
                     "photoshop"}


class SdApi:
    """The server's endpoints and the state they share (engine, job state, options, queue lock)."""

    def __init__(self, app: FastAPI, engine: Engine, auth: Optional[Callable] = None,
                 cmd_flags: Optional[dict[str, Any]] = None, limits: Optional[Limits] = None,
                 lora_dir: Optional[str] = None) -> None:
        self.engine = engine
        self.loras = LoraLibrary(lora_dir)  # None: the kit's data/loras (its demo LoRA)
        self.limits = limits or Limits()
        self.state = JobState()
        self.options = Options(engine)
        self.queue_lock = threading.Lock()
        self.cmd_flags = dict(cmd_flags or {})

        def route(path: str, handler: Callable, methods: list[str], protected: bool = True, **kwargs) -> None:
            dependencies = [Depends(auth)] if (auth and protected) else []
            app.add_api_route(f"/sdapi/v1/{path}", handler, methods=methods, dependencies=dependencies, **kwargs)

        route("txt2img", self.txt2img, ["POST"], response_model=TextToImageResponse)
        route("img2img", self.img2img, ["POST"], response_model=TextToImageResponse)
        route("extra-single-image", self.not_supported, ["POST"])
        route("extra-batch-images", self.not_supported, ["POST"])
        route("png-info", self.png_info, ["POST"], response_model=PNGInfoResponse)
        route("progress", self.progress, ["GET"], response_model=ProgressResponse)
        route("interrogate", self.interrogate, ["POST"], response_model=InterrogateResponse)
        route("interrupt", self.interrupt, ["POST"])
        route("skip", self.skip, ["POST"])
        route("options", self.get_options, ["GET"])
        route("options", self.set_options, ["POST"])
        route("cmd-flags", self.get_cmd_flags, ["GET"])
        route("samplers", self.samplers, ["GET"])
        route("schedulers", self.schedulers, ["GET"])
        route("upscalers", self.upscalers, ["GET"])
        route("latent-upscale-modes", self.latent_upscale_modes, ["GET"])
        route("sd-models", self.sd_models, ["GET"])
        route("memory", self.memory, ["GET"])
        route("embeddings", self.embeddings, ["GET"])
        route("scripts", self.scripts, ["GET"])
        # Lists that are empty on the kit's server: it has no VAEs, styles, extensions, ...
        for path in ("sd-vae", "hypernetworks", "face-restorers", "realesrgan-models", "prompt-styles",
                     "script-info", "extensions"):
            route(path, self.empty_list, ["GET"])
        for path in ("refresh-checkpoints", "refresh-vae", "refresh-embeddings"):
            route(path, self.nothing, ["POST"])
        for path in ("unload-checkpoint", "reload-checkpoint"):
            route(path, self.empty_dict, ["POST"])
        # The Lora extension registers these straight on the app, so --api-auth does not cover them.
        route("loras", self.list_loras, ["GET"], protected=False)
        route("refresh-loras", self.refresh_loras, ["POST"], protected=False)

    # --- generation -----------------------------------------------------------------------------

    def txt2img(self, req: Txt2ImgRequest):
        """Generate images from a prompt (A1111's txt2img, see generation.py)."""
        return txt2img(req, self.engine, self.state, self.options, self.queue_lock, self.limits, self.loras)

    def img2img(self, req: Img2ImgRequest):
        """Generate images from init images and a prompt (A1111's img2img, see generation.py)."""
        return img2img(req, self.engine, self.state, self.options, self.queue_lock, self.limits, self.loras)

    def not_supported(self):
        """Not available on the kit's server."""
        raise HTTPException(status_code=501, detail="not supported by the kit's preview server "
                                                    "(only txt2img and img2img generate); use a real A1111 for this")

    def progress(self, skip_current_image: bool = False):
        """Progress of the running job (A1111's formula, see state.py); never waits for the queue lock."""
        snapshot = self.state.snapshot()
        image = snapshot["current_image"]
        snapshot["current_image"] = encode_png_b64(image) if image is not None and not skip_current_image else None
        return snapshot

    def interrupt(self):
        """Stop the running job; its request still returns 200 with the images made so far."""
        self.state.interrupt()
        return {}

    def skip(self):
        """Abandon the current batch of the running job and go on with the next one."""
        self.state.skip()

    # --- images in ------------------------------------------------------------------------------

    def png_info(self, req: PNGInfoRequest):
        """Read the infotext of a PNG: ``{info, items, parameters}``, as A1111's png-info answers."""
        if not req.image.strip():
            return {"info": "", "items": {}, "parameters": {}}
        image = decode_image(req.image, self.limits)
        items = dict(image.info or {})
        del image  # the pixels are not needed: free them before the reply is built
        info = items.pop("parameters", None) or ""
        for key in IGNORED_INFO_KEYS:
            items.pop(key, None)
        # Keep only JSON-friendly values (PNG chunks can hold bytes).
        items = {str(k): v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in items.items()}
        return {"info": info, "items": items, "parameters": parse_infotext(info)}

    def interrogate(self, req: InterrogateRequest):
        """Caption an image; the preview engine says honestly that its caption is a placeholder."""
        if not req.image:
            raise HTTPException(status_code=404, detail="Image not found")
        open_image(req.image, self.limits)  # size and format checked now, not after the queue
        if req.value("model") not in ("clip", "deepdanbooru"):
            raise HTTPException(status_code=404, detail="Model not found")
        with self.queue_lock:  # a real engine would share the GPU with generation
            # Decoded only once it is this request's turn: waiting requests hold no pixels.
            return {"caption": self.engine.caption(decode_image(req.image, self.limits))}

    # --- settings and lists ---------------------------------------------------------------------

    def get_options(self):
        return self.options.as_dict()

    def set_options(self, req: dict[str, Any] = Body(...)):
        """Change settings; an unknown key is a 500 KeyError, as in A1111. Returns null.

        With an engine that can load models, a new ``sd_model_checkpoint`` is loaded here, after the
        running job (the queue lock), as A1111 does; one that GET /sd-models does not list is a 500.
        Text that could not be written back as JSON (a lone surrogate) is a 422 naming the key.
        """
        for key, value in req.items():  # stored text must stay writable as JSON (GET /options)
            problem = surrogate_problem(key, "key") or surrogate_problem(value, key)
            if problem:
                raise limit_error(key, problem)
        if self.engine.switches_models and isinstance(req.get("sd_model_checkpoint"), str):
            self.options.checked({key: value for key, value in req.items() if key != "sd_model_checkpoint"})
            self.engine.find_model(req["sd_model_checkpoint"])  # not listed: the 500 now, not after the running job
            with self.queue_lock:
                self.engine.switch_model(req["sd_model_checkpoint"])
            req = {**req, **self.options.loaded_model()}
        self.options.update(req)

    def get_cmd_flags(self):
        """The server's command-line flags. Credentials are never shown (A1111 leaks them here)."""
        return {key: ("***" if "auth" in key and value else value) for key, value in self.cmd_flags.items()}

    def samplers(self):
        names = self.engine.sampler_names  # an engine may run only some of them
        return [item for item in catalog.sampler_list() if names is None or item["name"] in names]

    def schedulers(self):
        labels = self.engine.scheduler_names
        return [item for item in catalog.scheduler_list() if labels is None or item["label"] in labels]

    def upscalers(self):
        return catalog.UPSCALERS

    def latent_upscale_modes(self):
        return [{"name": name} for name in catalog.LATENT_UPSCALE_MODES]

    def sd_models(self):
        return self.engine.list_models()  # an engine that can load several models lists them all

    def memory(self):
        """RAM of this process and the machine (no psutil needed), and the GPU's memory in A1111's
        shape when the engine runs on CUDA."""
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
        try:
            with open("/proc/self/statm") as statm:  # Linux: pages, then resident pages
                used = int(statm.read().split()[1]) * page
        except OSError:
            import resource

            used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        device = self.engine.device
        if device is None:
            cuda = {"error": f"unavailable (the {self.engine.name} engine does not use a GPU)"}
        else:
            from .engines.devices import cuda_memory

            cuda = cuda_memory(str(device))
        return {"ram": {"free": total - used, "used": used, "total": total}, "cuda": cuda}

    def list_loras(self):
        """The LoRA files of the LoRA folder (--lora-dir): ``[{name, alias, path, metadata}]``, as A1111."""
        return self.loras.entries()

    def refresh_loras(self):
        """Rescan the LoRA folder; returns null, as A1111."""
        self.loras.refresh()

    def embeddings(self):
        return {"loaded": {}, "skipped": {}}

    def scripts(self):
        return {"txt2img": [], "img2img": [sd_upscale.TITLE]}  # A1111 lists the titles lower-cased

    def empty_list(self):
        return []

    def empty_dict(self):
        return {}

    def nothing(self):
        return None
