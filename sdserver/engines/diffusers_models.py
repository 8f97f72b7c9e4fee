"""Finding, loading, naming and downloading models for the diffusers engine.

A model is given as one of:

* a **Hugging Face id** (``stabilityai/sd-turbo``): loaded from the local Hugging Face cache only.
  The server never downloads; ``--download`` (``make models-sd``) does, once, while online;
* a **diffusers folder** (one with ``model_index.json``, e.g. written by ``pipe.save_pretrained``);
* a single **A1111-style checkpoint** (``.safetensors``): diffusers needs the matching config
  files for it, from ``--config DIR_OR_ID`` or a ``<checkpoint stem>/`` folder next to the file.

Only Stable Diffusion 1.x/2.x pipelines (one CLIP text encoder, a UNet, the SD VAE) are supported.

Names follow A1111: the *title* is ``"<name> [<10 hex digits of sha256>]"``, the hash of the UNet
weights file (of the checkpoint file itself for a single file, as A1111 computes it).

    >>> pick_download_files(["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    ...                      "unet/diffusion_pytorch_model.fp16.safetensors", "sd_turbo.safetensors", "README.md"])
    ['model_index.json', 'unet/config.json', 'unet/diffusion_pytorch_model.fp16.safetensors']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .base import EngineUnavailable

DEFAULT_MODEL = "stabilityai/sd-turbo"  # SD 2.1 distilled to 1-4 steps: the laptop-CPU choice
DEFAULT_MODEL_SIZE = "about 2.6 GB"  # its fp16 weights (UNet 1.7 GB, text encoder 0.7 GB, VAE 0.2 GB)
TINY_DECODER = "madebyollin/taesd"  # TAESD: a tiny decoder for SD 1.x/2.x latents (MIT licence, ~10 MB)
COMPONENTS = ("unet", "vae", "text_encoder")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
NOT_SUPPORTED = ("text_encoder_2", "transformer", "prior", "decoder")  # SDXL, SD3/Flux, cascades
# The fix printed when a model is not on this machine.
DOWNLOAD_FIX = ("while online, run `make models-sd` (or `python -m sdserver --engine diffusers "
                "--model {model} --download`); or start with --model /path/to/a/diffusers/folder")


@dataclass
class ModelInfo:
    """A model the engine can load, with A1111's names for it."""

    source: str  # what the user gave: hub id, folder or file
    kind: str  # "hub", "folder" or "file"
    path: Path  # the local folder (hub: the cache snapshot) or file
    name: str  # A1111's model_name (file stem), written as "Model:" in the infotext
    sha256: str

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    @property
    def title(self) -> str:
        label = self.path.name if self.kind == "file" else (self.source if self.kind == "hub" else self.name)
        return f"{label} [{self.short_hash}]"

    def entry(self) -> dict:
        """The model as GET /sdapi/v1/sd-models lists it."""
        return {"title": self.title, "model_name": self.name, "hash": self.short_hash, "sha256": self.sha256,
                "filename": str(self.path), "config": None}

    def names(self) -> set[str]:
        """Every name POST /options {"sd_model_checkpoint": ...} accepts for this model."""
        return {self.title, self.name, self.source, str(self.path), self.short_hash, self.sha256,
                self.title.rsplit(" [", 1)[0], self.path.name}


# --- where is it? -----------------------------------------------------------------------------


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str, filename: str = "model_index.json") -> Path | None:
    """The cache folder of a Hub repo if ``filename`` of it was downloaded, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()))
    return Path(found).parent if isinstance(found, str) else None


def locate(source: str, config: str | None = None) -> tuple[str, Path]:
    """(kind, local path) for a model name, or EngineUnavailable saying what to do. Never goes online."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return "folder", path.resolve()
        raise EngineUnavailable(f"{path} is a folder without model_index.json, so not a diffusers model folder.",
                                fix="point --model at a folder written by pipe.save_pretrained(...), a "
                                    ".safetensors checkpoint, or a Hugging Face id such as " + DEFAULT_MODEL)
    if path.is_file():
        if path.suffix.lower() in (".safetensors", ".ckpt"):
            return "file", path.resolve()
        raise EngineUnavailable(f"{path} is not a .safetensors checkpoint or a diffusers folder.",
                                fix="point --model at a diffusers folder, a .safetensors file or a Hugging Face id")
    if HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        snapshot = cached_snapshot(source)
        if snapshot is not None:
            return "hub", snapshot
        raise EngineUnavailable(f"the model {source!r} is not on this machine (not in the Hugging Face cache "
                                f"{hub_cache_dir()}), and the kit's server never downloads while it starts.",
                                fix=DOWNLOAD_FIX.format(model=source))
    raise EngineUnavailable(f"no model {source!r}: it is neither a folder, a file, nor a Hugging Face id "
                            "of the form owner/name.",
                            fix=f"use e.g. --model {DEFAULT_MODEL} or --model /path/to/folder")


def locate_config(checkpoint: Path, config: str | None) -> Path:
    """The diffusers config folder for a single-file checkpoint (see the module docstring)."""
    if config:
        folder = Path(config).expanduser()
        if (folder / "model_index.json").is_file():
            return folder
        snapshot = cached_snapshot(config) if HUB_ID.match(config) else None
        if snapshot is not None:
            return snapshot
        raise EngineUnavailable(f"--config {config} is neither a diffusers folder nor a downloaded Hugging Face id.",
                                fix=f"download its configs once while online: python -m sdserver --engine "
                                    f"diffusers --model {checkpoint} --config {config} --download")
    sibling = checkpoint.with_suffix("")
    if (sibling / "model_index.json").is_file():
        return sibling
    raise EngineUnavailable(
        f"{checkpoint.name} is a single-file checkpoint; diffusers needs the config files of its architecture "
        "to read it, and looks nowhere online.",
        fix="add --config with a diffusers folder or a Hugging Face id of the same architecture, e.g. --config "
            "stable-diffusion-v1-5/stable-diffusion-v1-5 for SD 1.x or --config stabilityai/stable-diffusion-2-1-base "
            "for SD 2.x (fetch its configs once with --download while online)")


# --- names and hashes ---------------------------------------------------------------------------

_HASHES: dict[tuple[str, int, float], str] = {}


def sha256_of(file: Path) -> str:
    """sha256 of a file. Files in the Hugging Face cache are named by their sha256: no reading needed."""
    real = Path(os.path.realpath(file))
    if re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def unet_weights(folder: Path, variant: str | None = None) -> Path | None:
    """The UNet weights file of a diffusers folder (the variant's if given), or None."""
    files = sorted((folder / "unet").glob("*.safetensors")) + sorted((folder / "unet").glob("*.bin"))
    files += sorted((folder / "unet").glob("*.index.json"))
    if variant:
        files = [f for f in files if f".{variant}." in f.name] or files
    return files[0] if files else None


def fp16_variant(folder: Path, want_full_precision: bool) -> str | None:
    """Use the ``fp16`` weight files when a folder has them (half the download and the reading),
    except for a float32 run when full-precision files are there too."""
    names = [f.name for f in (folder / "unet").glob("*.safetensors")]
    has_fp16 = any(".fp16." in name for name in names)
    has_full = any(".fp16." not in name for name in names)
    if has_fp16 and (not has_full or not want_full_precision):
        return "fp16"
    return None


def model_info(source: str, kind: str, path: Path, variant: str | None = None) -> ModelInfo:
    """A1111's names for a located model."""
    if kind == "file":
        name, sha = path.stem, sha256_of(path)
    else:
        name = source.rstrip("/").split("/")[-1] if kind == "hub" else path.name
        weights = unet_weights(path, variant)
        sha = sha256_of(weights) if weights else hashlib.sha256(str(path).encode()).hexdigest()
    if name.startswith("offline-preview"):  # that prefix marks the preview engine's placeholders
        name = "diffusers-" + name
    return ModelInfo(source=source, kind=kind, path=path, name=name, sha256=sha)


def cached_hub_models() -> list[ModelInfo]:
    """SD 1.x/2.x pipelines in the Hugging Face cache (what GET /sd-models lists besides the loaded
    model), found from the cache's folder names alone."""
    found = []
    for repo in sorted(hub_cache_dir().glob("models--*--*")):
        repo_id = repo.name[len("models--"):].replace("--", "/", 1)
        snapshot = cached_snapshot(repo_id)
        if snapshot is None or unet_weights(snapshot) is None or not is_supported(snapshot)[0]:
            continue
        found.append(model_info(repo_id, "hub", snapshot, fp16_variant(snapshot, False)))
    return found


def folder_models(folder: str | os.PathLike) -> list[ModelInfo]:
    """SD 1.x/2.x diffusers folders directly inside ``folder`` (``--ckpt-dir``, like A1111's): the models
    clients may switch to besides the Hugging Face cache. A missing folder lists nothing."""
    root = Path(folder).expanduser()
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if (path / "model_index.json").is_file() and unet_weights(path) is not None and is_supported(path)[0]:
            path = path.resolve()
            found.append(model_info(str(path), "folder", path, fp16_variant(path, False)))
    return found


def is_supported(folder: Path) -> tuple[bool, str]:
    """Whether a diffusers folder holds an SD 1.x/2.x pipeline, and its pipeline class name."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, "unreadable model_index.json"
    class_name = str(index.get("_class_name", "?"))
    ok = all(part in index for part in ("unet", "vae", "text_encoder", "tokenizer"))
    ok = ok and not any(part in index for part in NOT_SUPPORTED)
    return ok, class_name


# --- loading -------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_libraries():
    """Hide diffusers' and transformers' progress bars and config notices while loading."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    levels = (diffusers.utils.logging.get_verbosity(), transformers.utils.logging.get_verbosity())
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(levels[0])
        transformers.utils.logging.set_verbosity(levels[1])


def dtype_argument(dtype) -> dict:
    """``{"dtype": dtype}`` for from_pretrained, or ``{"torch_dtype": dtype}`` for diffusers releases
    from before the 2026 rename (diffusers PR #14205, which added ``diffusers.utils._resolve_dtype``)."""
    import diffusers.utils

    return {"dtype": dtype} if hasattr(diffusers.utils, "_resolve_dtype") else {"torch_dtype": dtype}


def load_pipeline(source: str, *, dtype, device: str, config: str | None = None):
    """Load an SD 1.x/2.x pipeline from local files only; returns (pipeline, ModelInfo).

    Every failure is an EngineUnavailable that says what to do (download, other dtype, ...).
    """
    import torch
    from diffusers import StableDiffusionPipeline

    kind, path = locate(source, config)
    common = dict(**dtype_argument(dtype), local_files_only=True, safety_checker=None, feature_extractor=None,
                  requires_safety_checker=False)  # A1111 has no safety checker either
    variant = None
    try:
        with quiet_libraries():
            if kind == "file":
                config_dir = locate_config(path, config)
                pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config_dir), **common)
            else:
                supported, class_name = is_supported(path)
                if not supported:
                    raise EngineUnavailable(f"{source} is a {class_name}; the kit's diffusers engine runs Stable "
                                            "Diffusion 1.x/2.x pipelines only (SDXL, SD3 and Flux are not supported).",
                                            fix=f"use an SD 1.x/2.x model, e.g. --model {DEFAULT_MODEL}")
                variant = fp16_variant(path, want_full_precision=dtype == torch.float32)
                pipe = StableDiffusionPipeline.from_pretrained(str(path), variant=variant, **common)
            pipe = pipe.to(device)
    except EngineUnavailable:
        raise
    except (MemoryError, torch.cuda.OutOfMemoryError) as error:
        raise EngineUnavailable(f"not enough memory to load {source} ({type(error).__name__}).",
                                fix="close other programs, use --dtype float16/bfloat16 (half the memory), "
                                    "or --device cpu if the GPU is too small") from error
    except Exception as error:  # a broken download, a wrong config, an unsupported file
        if "allocate memory" in str(error):  # the CPU allocator's out-of-memory RuntimeError
            raise EngineUnavailable(f"not enough memory to load {source}.",
                                    fix="close other programs, or use --dtype bfloat16 (half the memory)") from error
        raise EngineUnavailable(f"could not load {source}: {type(error).__name__}: {error}",
                                fix="check the model files, or download them again with --download while "
                                    "online") from error
    pipe.set_progress_bar_config(disable=True)
    return pipe, model_info(source, kind, path, variant)


def load_tiny_decoder(spec: str, *, dtype, device: str):
    """An AutoencoderTiny (TAESD) from a folder or the cache; ``spec`` "tiny" means TAESD.

    Returns (decoder or None, note). None means "use the full VAE": for "tiny" when TAESD is not
    downloaded (a start-up note, not an error); a folder or id given explicitly must load.
    """
    from diffusers import AutoencoderTiny

    repo = TINY_DECODER if spec == "tiny" else spec
    folder = Path(repo).expanduser()
    if not (folder / "config.json").is_file():
        folder = cached_snapshot(repo, "config.json") if HUB_ID.match(repo) else None
    if folder is None:
        if spec == "tiny":
            return None, (f"the tiny decoder ({TINY_DECODER}) is not downloaded, so images are decoded with the "
                          "model's full VAE (slower on a CPU). To get it: `make models-sd` while online.")
        raise EngineUnavailable(f"--decoder {spec}: no such folder or downloaded Hugging Face id.",
                                fix="use --decoder tiny, --decoder full, or a folder with an AutoencoderTiny")
    try:
        with quiet_libraries():
            decoder = AutoencoderTiny.from_pretrained(str(folder), **dtype_argument(dtype),
                                                      local_files_only=True).to(device)
    except Exception as error:
        raise EngineUnavailable(f"could not load the tiny decoder from {folder}: {type(error).__name__}: {error}",
                                fix="use --decoder full, or download it again with --download") from error
    return decoder, f"tiny decoder: {repo}"


# --- downloading (make models-sd) --------------------------------------------------------------------


def pick_download_files(files: list[str]) -> list[str]:
    """The files of a diffusers repo the engine needs: configs, tokenizer, scheduler, and one copy of
    the UNet, VAE and text encoder weights (the fp16 variant when there is one). Single-file
    checkpoints at the top, other formats and the safety checker are left out."""
    wanted = []
    for name in files:
        top = name.split("/")[0]
        if name == "model_index.json" or top in ("scheduler", "tokenizer"):
            wanted.append(name)
        elif top in COMPONENTS and name.endswith(".json") and "index" not in name:
            wanted.append(name)
    for component in COMPONENTS:
        weights = [n for n in files if n.startswith(component + "/") and
                   (n.endswith(".safetensors") or n.endswith(".safetensors.index.json"))]
        half = [n for n in weights if ".fp16." in n]
        wanted += half or [n for n in weights if ".fp16." not in n]
    return wanted


def download(model: str, decoder: str = "tiny", config: str | None = None) -> list[str]:
    """Fetch a model (and TAESD, and a checkpoint's configs) into the Hugging Face cache. Needs internet."""
    from huggingface_hub import HfApi, snapshot_download

    done = []
    targets: list[tuple[str, list[str] | None]] = []
    if HUB_ID.match(model) and not Path(model).expanduser().exists():
        targets.append((model, pick_download_files(HfApi().list_repo_files(model))))
    if config and HUB_ID.match(config) and not Path(config).expanduser().exists():
        # Configs only (a few MB): what a single-file checkpoint needs besides itself.
        needed = pick_download_files(HfApi().list_repo_files(config))
        targets.append((config, [f for f in needed if f.endswith((".json", ".txt"))]))
    if decoder in ("tiny", "auto"):
        targets.append((TINY_DECODER, ["config.json", "diffusion_pytorch_model.safetensors"]))
    for repo, patterns in targets:
        folder = snapshot_download(repo, allow_patterns=patterns)
        size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
        done.append(f"{repo}: {size / 1e9:.2f} GB in {folder}")
    return done
