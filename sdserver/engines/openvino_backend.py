"""The diffusers engine's OpenVINO backend: the same model, converted once, faster on ordinary CPUs.

    python -m sdserver --engine diffusers --convert-openvino [--int8]   # once, offline (make models-sd OPENVINO=1)
    python -m sdserver --engine diffusers --backend openvino            # then; --backend auto picks it too

optimum-intel's ``OVStableDiffusionPipeline`` is a diffusers ``StableDiffusionPipeline`` whose UNet, text
encoder and VAE are OpenVINO models; the sampling loop is diffusers' own. So :class:`OpenVINOEngine` is the
diffusers engine with another pipeline under it, and keeps its A1111 behaviour: samplers (schedulers
swapped per request), seeds (the same CPU float32 starting noise and generators: the same seed gives the
same image as the PyTorch path, within float rounding), progress with previews and interrupt (diffusers'
step callback), emphasis and long prompts, img2img, and the tiny decoder (TAESD, in PyTorch: a few
hundredths of the time). What OpenVINO cannot do answers a 422: tiling (no convolution to switch to
circular padding), Clip skip (the converted text encoder has no final layer norm of its own), hires fix,
LoRAs (a converted UNet has no PEFT layers to load them into), other models than the one converted.

Where conversions live: ``<Hugging Face cache>/../kit-openvino/<model>[-int8]`` (next to the downloaded
models, see :func:`converted_folder`); ``--model`` may also name a converted folder directly.
Device: an Intel GPU when OpenVINO finds one, else the CPU; ``--device gpu|cpu|GPU.1|NPU`` overrides.

    >>> converted_folder("stabilityai/sd-turbo", int8=True).name
    'stabilityai--sd-turbo-int8'
    >>> ov_device_name("gpu"), ov_device_name("GPU.1"), ov_device_name("cpu")
    ('GPU', 'GPU.1', 'CPU')
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .base import EngineUnavailable
from .diffusers_engine import DiffusersEngine
from .diffusers_models import DEFAULT_MODEL, HUB_ID, ModelInfo, hub_cache_dir

log = logging.getLogger("sdserver")

SOURCE_FILE = "kit_source.json"  # written by convert(): which model a conversion came from, and its names
INSTALL_FIX = "pip install -e '.[diffusers,openvino]' (optimum-intel with OpenVINO and NNCF)"
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}  # --dtype -> OpenVINO's hint


def convert_fix(model: str | None, int8: bool = False) -> str:
    """The command that converts ``model`` (what a missing conversion's error tells)."""
    model_flag = f" --model {model}" if model and model != DEFAULT_MODEL else ""
    make = f"make models-sd OPENVINO=1{' INT8=1' if int8 else ''}" + (f" MODEL={model}" if model_flag else "")
    return (f"run `{make}` (downloads if needed, then converts), or offline once the model is downloaded: "
            f"python -m sdserver --engine diffusers{model_flag} --convert-openvino{' --int8' if int8 else ''}")


def is_installed() -> bool:
    """Whether optimum-intel and OpenVINO are importable (looked up, not imported: no torch here)."""
    try:
        return all(importlib.util.find_spec(name) for name in ("openvino", "optimum.intel", "diffusers"))
    except ModuleNotFoundError:  # "optimum" itself missing
        return False


def is_converted_folder(path: Path) -> bool:
    return (path / "unet" / "openvino_model.xml").is_file() and (path / "model_index.json").is_file()


def converted_folder(model: str | None, int8: bool = False) -> Path:
    """Where the conversion of ``model`` lives: ``kit-openvino/`` next to the Hugging Face hub cache, one
    folder per model and weight format (a local folder or file is told apart by a hash of its path)."""
    model = model or DEFAULT_MODEL
    if HUB_ID.match(model) and not Path(model).expanduser().exists():
        name = model.replace("/", "--")
    else:
        path = Path(model).expanduser().resolve()
        name = f"{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    return hub_cache_dir().parent / "kit-openvino" / (name + ("-int8" if int8 else ""))


def find_converted(model: str | None, int8: bool = False) -> Path | None:
    """The converted folder to serve for ``model``: ``model`` itself if it is one; else its float32
    conversion (``int8=False``; the int8 one when only that exists) or its int8 one; None when none."""
    if model and is_converted_folder(Path(model).expanduser()):
        return Path(model).expanduser().resolve()
    for candidate in (True,) if int8 else (False, True):
        folder = converted_folder(model, candidate)
        if is_converted_folder(folder):
            return folder
    return None


def ov_device_name(requested: str) -> str:
    """OpenVINO's name for ``--device`` (cpu -> CPU, gpu -> GPU, GPU.1 as it is)."""
    return requested.upper() if requested.lower() in ("cpu", "gpu", "npu", "auto") else requested


def pick_ov_device(requested: str = "auto") -> str:
    """"auto": an Intel GPU when OpenVINO finds one, else the CPU; otherwise OpenVINO's device name,
    once OpenVINO says it is there (cuda and mps are PyTorch's: EngineUnavailable with the fix)."""
    import openvino

    available = openvino.Core().available_devices  # e.g. ['CPU', 'GPU'] or ['CPU', 'GPU.0', 'GPU.1']
    if requested == "auto":
        return "GPU" if any(name.startswith("GPU") for name in available) else "CPU"
    if requested.lower().startswith(("cuda", "mps")):
        raise EngineUnavailable(f"--device {requested} is a PyTorch device; OpenVINO runs on {', '.join(available)}.",
                                fix="use --backend pytorch for CUDA or MPS, or --device auto/cpu/gpu with OpenVINO")
    name = ov_device_name(requested)
    if name not in available and name.split(".")[0] not in ("AUTO", "HETERO", "MULTI") and not (
            name == "GPU" and any(found.startswith("GPU") for found in available)):
        raise EngineUnavailable(f"--device {requested}: OpenVINO finds only {', '.join(available)} here.",
                                fix="use --device auto (an Intel GPU when there is one, else cpu) or --device cpu")
    return name


def choose_backend(model: str | None, device: str = "auto", int8: bool = False) -> tuple[str, str]:
    """``(backend, why)`` for ``--backend auto``: a CUDA or MPS GPU with PyTorch, else OpenVINO when it is
    installed and the model converted, else PyTorch on the CPU. Only files are looked at, and torch is
    imported only when OpenVINO could be chosen (to ask for a GPU)."""
    if device.lower().startswith(("cuda", "mps")):
        return "pytorch", f"--device {device} is a PyTorch device"
    ov_device = device != "auto" and device.lower() != "cpu"  # gpu, GPU.1, NPU: OpenVINO's names
    if not is_installed():
        if ov_device:
            return "openvino", f"--device {device} is an OpenVINO device"  # the engine then says what is missing
        return "pytorch", f"OpenVINO is not installed, so PyTorch on the CPU unless there is a GPU ({INSTALL_FIX})"
    folder = find_converted(model, int8)
    if folder is None:
        return "pytorch", (f"no OpenVINO conversion of {model or DEFAULT_MODEL} yet, so PyTorch on the CPU unless "
                           f"there is a GPU; for faster CPU images {convert_fix(model, int8)}")
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return "pytorch", "PyTorch sees a CUDA GPU, the fastest path"
        if torch.backends.mps.is_available():
            return "pytorch", "PyTorch sees Apple's MPS GPU, the fastest path here"
    return "openvino", f"no CUDA or MPS GPU, and the OpenVINO conversion of the model is in {folder}"


# --- converting (make models-sd OPENVINO=1) ----------------------------------------------------------------


def convert(model: str | None, *, config: str | None = None, int8: bool = False, out: Path | None = None) -> Path:
    """Convert a downloaded SD 1.x/2.x model (hub id in the cache, diffusers folder or .safetensors) to
    OpenVINO into ``out`` (default :func:`converted_folder`), float32 or with 8-bit weights; offline."""
    import tempfile

    import torch

    from .diffusers_models import load_pipeline

    model = model or DEFAULT_MODEL
    # Load as the PyTorch engine does (cache only, fp16 files made float32, single files with their configs),
    # save a plain float32 diffusers folder, and export that: one path for every kind of source.
    pipe, info = load_pipeline(model, dtype=torch.float32, device="cpu", config=config)
    with tempfile.TemporaryDirectory(prefix="kit-openvino-") as scratch:
        pipe.save_pretrained(scratch)
        del pipe
        return export_folder(scratch, Path(out) if out else converted_folder(model, int8), int8=int8, info=info)


def export_folder(folder: str | Path, out: Path, *, int8: bool = False, info: ModelInfo | None = None) -> Path:
    """Export a float32 diffusers folder to OpenVINO IR in ``out`` (8-bit weights with NNCF when ``int8``),
    with :data:`SOURCE_FILE` naming the model it came from. A half-written conversion is never left in ``out``."""
    import shutil

    from optimum.intel import OVStableDiffusionPipeline

    from .diffusers_models import quiet_libraries

    # load_in_8bit=False: without it optimum-intel compresses models over 1 billion parameters on its own.
    options: dict[str, Any] = {"load_in_8bit": False}
    if int8:
        from optimum.intel import OVWeightQuantizationConfig

        options = {"quantization_config": OVWeightQuantizationConfig(bits=8)}
    with quiet_libraries():
        ov_pipe = OVStableDiffusionPipeline.from_pretrained(str(folder), export=True, compile=False,
                                                            local_files_only=True, **options)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    ov_pipe.save_pretrained(partial)
    del ov_pipe
    if info is not None:
        (partial / SOURCE_FILE).write_text(json.dumps({
            "source": info.source, "kind": info.kind, "path": str(info.path), "name": info.name,
            "sha256": info.sha256, "int8": int8}, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def convert_command(model: str | None, *, config: str | None = None, int8: bool = False) -> int:
    """``--convert-openvino``: convert, print where to, and how to serve it; 1 with the fix on failure."""
    if not is_installed():
        print(f"--convert-openvino needs the openvino extra. Fix: {INSTALL_FIX}", file=sys.stderr)
        return 1
    name = model or DEFAULT_MODEL
    print(f"Converting {name} to OpenVINO{' with 8-bit weights' if int8 else ''} (offline; a few minutes and "
          "several GB of memory for sd-turbo)...", flush=True)
    try:
        folder = convert(model, config=config, int8=int8)
    except EngineUnavailable as error:
        print(f"Conversion failed: {error}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"Done: {folder} ({size / 1e9:.2f} GB). Start the server with: python -m sdserver --engine diffusers"
          f"{' --model ' + model if model else ''} --backend openvino{' --int8' if int8 else ''}", flush=True)
    return 0


# --- the engine -----------------------------------------------------------------------------------------------


class OpenVINOEngine(DiffusersEngine):
    """The diffusers engine on an OpenVINO-converted model (see the module docstring).

    ``model``: the model as for the PyTorch path (its conversion is looked up) or a converted folder;
    ``int8``: serve the 8-bit conversion; ``device``: "auto", "cpu", "gpu" or an OpenVINO device name;
    ``dtype``: "auto" (OpenVINO's choice: f32 on most CPUs, bf16 where native, f16 on a GPU) or a precision
    hint; ``decoder``, ``step_delay``: as for the PyTorch path. One model per server (no switching).
    """

    switches_models = False

    def __init__(self, model: str | None = None, decoder: str = "auto", dtype: str = "auto", device: str = "auto",
                 config: str | None = None, step_delay: float = 0.0, int8: bool = False,
                 ckpt_dir: str | None = None, pipeline=None) -> None:
        from importlib.metadata import version

        if not is_installed():
            raise EngineUnavailable("--backend openvino needs optimum-intel and OpenVINO, which are not installed.",
                                    fix=INSTALL_FIX)
        folder = find_converted(model, int8)
        if folder is None:  # answered from files, before any slow import
            raise EngineUnavailable(
                f"{model or DEFAULT_MODEL} has no OpenVINO conversion{' with 8-bit weights' if int8 else ''} on this "
                f"machine (looked in {converted_folder(model, int8)}).", fix=convert_fix(model, int8))
        import torch

        if dtype not in ("auto", *PRECISION_HINTS):
            raise EngineUnavailable(f"--dtype {dtype}: unknown.", fix="use auto, float32, bfloat16 or float16")
        self.ov_device = pick_ov_device(device)
        self.device, self.dtype = "cpu", torch.float32  # where the PyTorch side lives: noise, schedulers, TAESD
        self.decoder_request, self.config, self.ckpt_dir = decoder, config, None
        self.step_delay = float(step_delay)
        self.version = f"kit-diffusers-{version('diffusers')}-openvino-{version('openvino')}"
        self.notes, self._loaded, self._tiny, self.decoder_name = [], {}, None, "full"
        self.folder, self.int8 = folder, _is_int8(folder)
        self.ov_config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[dtype]} if dtype != "auto" else {}
        self._use(pipeline or self._load(folder), _model_info(folder))
        self._set_up_decoder()
        weights = "int8 weights" if self.int8 else "float32 weights"
        self.description = (f"real images from {self.model_title} with OpenVINO on {self.ov_device} ({weights}, "
                            f"{self.decoder_name} VAE decoder; converted model in {folder})")

    def _load(self, folder: Path):
        from optimum.intel import OVStableDiffusionPipeline

        from .diffusers_models import quiet_libraries

        class KitOVPipeline(OVStableDiffusionPipeline):
            # Dynamic shapes: each request's own size. optimum-intel reads a static size from pipe.vae's
            # OpenVINO decoder, which is not there when the tiny decoder (PyTorch) takes its place.
            height = width = -1

        try:
            with quiet_libraries():
                return KitOVPipeline.from_pretrained(str(folder), device=self.ov_device, compile=True,
                                                                 local_files_only=True, ov_config=self.ov_config)
        except Exception as error:  # a broken or half-copied conversion, a driver problem
            raise EngineUnavailable(f"could not load the OpenVINO model in {folder}: {type(error).__name__}: {error}",
                                    fix=f"convert it again: {convert_fix(None)}, or use --backend pytorch") from error

    def listed(self) -> list[ModelInfo]:
        """One model: the converted one being served (switching would mean loading another conversion)."""
        return [self.info]

    def check_request(self, req, opts: dict) -> dict[str, Any]:
        """The PyTorch path's checks, plus what OpenVINO cannot do (a 422 that says what to send instead)."""
        from fastapi import HTTPException

        extra = super().check_request(req, opts)
        if req.tiling if req.tiling is not None else opts.get("tiling"):
            raise HTTPException(status_code=422, detail="tiling is not supported by the diffusers engine's OpenVINO "
                                                        "backend: send tiling=false, or start the server with "
                                                        "--backend pytorch")
        if req.value("enable_hr"):
            raise HTTPException(status_code=422, detail="hires fix (enable_hr) is not supported by the OpenVINO "
                                                        "backend yet: send enable_hr=false, or start the server with "
                                                        "--backend pytorch")
        from ..loras import parse_prompt

        tags = [f"<lora:{tag.name}>" for tag in parse_prompt(req.prompt or "")[1]]
        if tags:  # a converted UNet has no PEFT layers to put a LoRA in
            raise HTTPException(status_code=422, detail=f"LoRAs ({', '.join(tags)}) are not supported by the OpenVINO "
                                                        "backend: remove the tag from the prompt, or start the server "
                                                        "with --backend pytorch")
        try:
            clip_skip = int(opts.get("CLIP_stop_at_last_layers", 1))
        except (TypeError, ValueError):
            clip_skip = 1  # what the server itself makes of such a value
        if clip_skip > 1:
            raise HTTPException(status_code=422, detail="Clip skip (CLIP_stop_at_last_layers > 1) is not supported by "
                                                        "the OpenVINO backend: set it to 1, or use --backend pytorch")
        extra["Backend"] = f"OpenVINO {self.ov_device}" + (" int8" if self.int8 else "")
        return extra

    def _img2img(self, job, scheduler, noise, common: dict, latents=None):
        """The PyTorch path's img2img; its pipeline is built around the OpenVINO models here (optimum-intel's
        pipelines have no ``from_pipe``): the same models, no second copy."""
        if self._img2img_pipe is None:
            from diffusers import StableDiffusionImg2ImgPipeline

            pipe = self.pipe
            self._img2img_pipe = StableDiffusionImg2ImgPipeline(
                vae=self.full_vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            self._img2img_pipe.set_progress_bar_config(disable=True)
        return super()._img2img(job, scheduler, noise, common, latents)

    def load_loras(self, loras) -> dict[str, str]:
        """Never reached through the API (check_request answers a LoRA tag with a 422); a guard, so that no path
        tries PEFT on a converted model."""
        return {item.name: "LoRAs are not supported by the OpenVINO backend; use --backend pytorch" for item in loras}

    def switch_model(self, name: str) -> None:
        self.find_model(name)  # the one model: nothing to load; any other name is "not found" (a 500, as A1111)


def _is_int8(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8")).get("int8"))
    except (OSError, ValueError):
        return folder.name.endswith("-int8")


def _model_info(folder: Path) -> ModelInfo:
    """A1111's names for a conversion: those of the model it came from (float32: the same hash, so the
    infotext names the same model as the PyTorch path); int8 weights get their own name and hash."""
    try:
        source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
        info = ModelInfo(source=source["source"], kind=source["kind"], path=Path(source["path"]),
                         name=source["name"], sha256=source["sha256"])
    except (OSError, ValueError, KeyError):  # a folder converted by other means
        sha = hashlib.sha256((folder / "unet" / "openvino_model.xml").read_bytes()).hexdigest()
        info = ModelInfo(source=str(folder), kind="folder", path=folder, name=folder.name, sha256=sha)
    if _is_int8(folder):
        info = ModelInfo(source=info.source, kind="folder", path=folder, name=info.name + "-int8",
                         sha256=hashlib.sha256(f"{info.sha256}-int8".encode()).hexdigest())
    return info


__all__ = ["OpenVINOEngine", "choose_backend", "convert", "converted_folder", "find_converted"]
