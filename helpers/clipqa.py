"""``ClipScorer``: rate how well an image matches a text with CLIP (open_clip).

CLIP's encoders put a picture and a text describing it close together in one vector space; their cosine
similarity (for real photos and captions mostly 0.1 to 0.4) measures the match (helpers/raters.py wraps
it). Settings: ``CLIP_MODEL``, ``CLIP_PRETRAINED`` (an open_clip tag, or a file) and ``CLIP_DEVICE``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Sequence

from .config import KIT_ROOT, load_settings
from .errors import KitError
from .images import as_rgb

CONFIG_DIR = KIT_ROOT / "data" / "clip"  # extra model configs, e.g. the tiny test model
TINY_MODEL = "tiny-clip-test"

MAKE_MODELS_FIX = ("Run `make models` once while online (it downloads the default CLIP weights, about 600 MB), "
                   "or point CLIP_PRETRAINED at a checkpoint file you have, e.g. CLIP_PRETRAINED=/path/to/"
                   "open_clip_model.safetensors.")


class ClipError(KitError, RuntimeError):
    """CLIP could not be loaded or used; the message names the cause and the fix."""


@dataclass
class LoadedClip:
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    seconds: float  # how long loading took (the one-time cost)


_LOADED: dict[tuple[str, str, str], LoadedClip] = {}


def pick_device(requested: str | None = None) -> str:
    """``requested`` if given (not "auto"), else the first of "cuda", "mps" and "cpu" PyTorch sees (the kit's
    server too)."""
    import torch
    if requested and requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@lru_cache(maxsize=1)
def _register_configs() -> None:
    """Make the model configs in data/clip/ (e.g. the tiny test model) known to open_clip, once."""
    import open_clip
    open_clip.add_model_config(CONFIG_DIR)


def _cached(model: str, tag: str) -> bool:
    """True when the weights for (model, tag) are already in the local cache."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])  # "org/name/" or "org/name/file.bin", as open_clip reads it
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        hf_tokenizer = open_clip.get_model_config(model)["text_cfg"].get("hf_tokenizer_name")
        if hf_tokenizer and not isinstance(try_to_load_from_cache(hf_tokenizer, "tokenizer_config.json"), str):
            return False  # SigLIP: the tokenizer comes from the Hub too, and `make models` fetches it
        return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)
    if cfg.get("url"):
        return (Path.home() / ".cache" / "clip" / Path(cfg["url"]).name).is_file()
    return False


def _hub_reachable() -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=3.0):
            return True
    except OSError:
        return False


def load_clip(model: str | None = None, pretrained: str | None = None, device: str | None = None) -> LoadedClip:
    """Load (once per process) a CLIP model, its preprocessing and tokenizer. ``pretrained`` is an open_clip
    tag (downloaded on first use; offline, fails within seconds), a file, or "none"."""
    settings = load_settings()
    model = model or settings.clip_model
    pretrained = pretrained if pretrained is not None else settings.clip_pretrained
    device = pick_device(device or settings.clip_device)
    key = (model, str(pretrained), device)
    if key in _LOADED:
        return _LOADED[key]

    started = time.perf_counter()
    import open_clip
    from huggingface_hub import constants
    _register_configs()
    if model not in open_clip.list_models():
        raise ClipError(f"open_clip has no model named {model!r}.",
                        "Set CLIP_MODEL to one of open_clip.list_models(), e.g. ViT-B-32.")
    weights: str | None = pretrained
    offline = False
    if str(pretrained).lower() in ("", "none"):
        weights = None
    elif Path(pretrained).expanduser().is_file():
        weights = str(Path(pretrained).expanduser())
    elif ("/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth"))):
        raise ClipError(f"CLIP_PRETRAINED={pretrained!r} looks like a file, but there is no such file.",
                        "Check the path, or use an open_clip tag such as laion2b_s34b_b79k.")
    elif pretrained not in open_clip.list_pretrained_tags_by_model(model):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise ClipError(f"{pretrained!r} is not a pretrained tag of {model}.", f"Use one of: {tags}.")
    elif _cached(model, pretrained):
        offline = True
    elif constants.HF_HUB_OFFLINE:
        raise ClipError(f"The CLIP weights {model}/{pretrained} are not in the local cache, and HF_HUB_OFFLINE is set.",
                        MAKE_MODELS_FIX)
    elif not _hub_reachable():
        raise ClipError(f"The CLIP weights {model}/{pretrained} are not on this machine and cannot be downloaded "
                        "(no connection to huggingface.co).", MAKE_MODELS_FIX)
    # Cached weights load with the hub off: offline, huggingface_hub would retry for almost a minute.
    hub_was_offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = hub_was_offline or offline
    try:
        tokenizer = open_clip.get_tokenizer(model)  # SigLIP: a Hugging Face tokenizer, from the Hub's cache
        clip_model, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=weights, device=device)
    except ImportError as err:  # only the Hugging Face tokenizers (SigLIP) need transformers
        raise ClipError(f"{model}'s tokenizer needs the transformers package ({err}).",
                        "pip install transformers, then restart the kernel.") from None
    except (RuntimeError, OSError) as err:
        raise ClipError(f"Could not load CLIP {model}/{pretrained}: {str(err).splitlines()[0]}",
                        MAKE_MODELS_FIX) from None
    finally:
        constants.HF_HUB_OFFLINE = hub_was_offline
    clip_model.eval()  # open_clip returns the model in training mode
    loaded = LoadedClip(clip_model, preprocess, tokenizer, device, time.perf_counter() - started)
    _LOADED[key] = loaded
    return loaded


class ClipScorer:
    """Score texts against images with one CLIP model (arguments override the settings).

    >>> ClipScorer().passes("a red fox", "fox.png", 0.25)   # doctest: +SKIP
    True
    """

    def __init__(self, model: str | None = None, pretrained: str | None = None, device: str | None = None):
        settings = load_settings()
        self.model_name = model or settings.clip_model
        self.pretrained = pretrained if pretrained is not None else settings.clip_pretrained
        self._clip = load_clip(self.model_name, self.pretrained, device or settings.clip_device)
        self.device = self._clip.device
        self.meaningful = not self.model_name.startswith("tiny-") and str(self.pretrained).lower() not in ("", "none")

    def __repr__(self) -> str:
        note = "" if self.meaningful else ", TEST MODEL: scores are meaningless"
        return f"ClipScorer({self.model_name}/{Path(str(self.pretrained)).name}, device={self.device}{note})"

    @property
    def load_seconds(self) -> float:
        """How long loading the model took (paid once per process)."""
        return self._clip.seconds

    def encode_images(self, images: Sequence):
        """L2-normalised image embeddings, all images in one batch (PIL images or paths)."""
        import torch
        batch = torch.stack([self._clip.preprocess(as_rgb(image)) for image in images]).to(self.device)
        with torch.inference_mode():
            features = self._clip.model.encode_image(batch)
        return features / features.norm(dim=-1, keepdim=True)

    def encode_texts(self, texts: Sequence[str], long_text: str = "truncate"):
        """L2-normalised text embeddings. The model reads ``token_limit`` tokens (75 for CLIP, 63 for SigLIP 2):
        ``long_text="truncate"`` drops the rest (with a warning), ``"chunks"`` averages the embeddings of all
        pieces of that size."""
        import torch
        if long_text not in ("truncate", "chunks"):
            raise ValueError("long_text must be 'truncate' or 'chunks'")
        limit, rows = self.token_limit, []
        for text in texts:
            ids = self._text_ids(text)  # without start/end markers, never truncated
            if len(ids) > limit and long_text == "truncate":
                warnings.warn(f"{self.model_name} reads {limit} tokens; this text has {len(ids)}, so the last "
                              f"{len(ids) - limit} tokens are ignored. Pass long_text='chunks' to use all of it.",
                              stacklevel=3)
            pieces = [ids[i:i + limit] for i in range(0, max(len(ids), 1), limit)]
            rows.append(self._encode_token_pieces(pieces[:1] if long_text == "truncate" else pieces))
        return torch.cat(rows)

    @property
    def token_limit(self) -> int:
        """The text tokens this model reads: its context length less the markers its tokenizer adds (CLIP: 77 - 2
        for start and end; SigLIP 2: 64 - 1, an end marker only)."""
        before, after, _, _ = self._markers
        return self._clip.tokenizer.context_length - len(before) - len(after)

    def _text_ids(self, text: str) -> list[int]:
        tokenizer = self._clip.tokenizer
        if hasattr(tokenizer, "tokenizer"):  # open_clip's wrapper of a Hugging Face tokenizer (SigLIP)
            return tokenizer.tokenizer(tokenizer.clean_fn(text), add_special_tokens=False)["input_ids"]
        return list(tokenizer.encode(text))  # open_clip's own CLIP tokenizer

    @cached_property
    def _markers(self) -> tuple[list[int], list[int], int, str]:
        """The ids the tokenizer puts before and after a text, its padding id and side, as open_clip pads
        (asked once per scorer: every text encoded needs them)."""
        tokenizer = self._clip.tokenizer
        if not hasattr(tokenizer, "tokenizer"):
            return [tokenizer.sot_token_id], [tokenizer.eot_token_id], 0, "right"
        hf = tokenizer.tokenizer  # a Hugging Face tokenizer: let it show where its markers go around one word
        plain, marked = hf("a", add_special_tokens=False)["input_ids"], hf("a")["input_ids"]
        start = marked.index(plain[0])
        return marked[:start], marked[start + len(plain):], hf.pad_token_id, hf.padding_side

    def _encode_token_pieces(self, pieces: list[list[int]]):
        import torch
        before, after, pad, side = self._markers
        rows = []
        for piece in pieces:
            ids = [*before, *piece, *after]
            padding = [pad] * (self._clip.tokenizer.context_length - len(ids))
            rows.append(padding + ids if side == "left" else ids + padding)
        tokens = torch.tensor(rows, dtype=torch.long)
        with torch.inference_mode():
            features = self._clip.model.encode_text(tokens.to(self.device))
        features = features / features.norm(dim=-1, keepdim=True)
        mean = features.mean(dim=0, keepdim=True)
        return mean / mean.norm(dim=-1, keepdim=True)

    def similarity(self, text: str, images: Sequence, long_text: str = "truncate") -> list[float]:
        """Cosine similarity of ``text`` with each image (one batch for all images).

        >>> scorer.similarity("a lighthouse in a storm", gen.images)   # doctest: +SKIP
        [0.29, 0.33, 0.27]
        """
        if isinstance(images, (str, Path)) or hasattr(images, "convert"):
            images = [images]
        if not images:
            return []
        return (self.encode_images(images) @ self.encode_texts([text], long_text).T).squeeze(1).tolist()

    def clip_score(self, text: str, images: Sequence, long_text: str = "truncate") -> list[float]:
        """CLIP-S of Hessel et al. (2021): ``2.5 * max(cos, 0)`` per image, roughly 0 to 1 (torchmetrics'
        ``CLIPScore`` is ``100 * cos``: CLIP-S 0.75 = cosine 0.30 = torchmetrics 30)."""
        return [2.5 * max(cos, 0.0) for cos in self.similarity(text, images, long_text)]

    def best(self, text: str, images: Sequence) -> tuple[int, float]:
        """Index and cosine similarity of the image that matches ``text`` best."""
        scores = self.similarity(text, images)
        if not scores:
            raise ValueError("best() needs at least one image")
        index = max(range(len(scores)), key=scores.__getitem__)
        return index, scores[index]

    def passes(self, text: str, image, threshold: float) -> bool:
        """True when the image's cosine similarity with ``text`` reaches ``threshold``."""
        return self.similarity(text, [image])[0] >= threshold

    def text_similarity(self, a: str, b: str, long_text: str = "truncate") -> float:
        """Cosine similarity of two texts with CLIP's text encoder (the caption route's fallback)."""
        features = self.encode_texts([a, b], long_text)
        return float(features[0] @ features[1])


def make_tiny_checkpoint(path: str | Path, seed: int = 0, model: str = TINY_MODEL) -> Path:
    """Save a tiny random CLIP model (``model``: a config of data/clip/ or open_clip's) as a checkpoint file, for
    tests and the lesson without real weights (``CLIP_MODEL=tiny-clip-test CLIP_PRETRAINED=<file>``)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    _register_configs()
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # "No pretrained weights loaded": true, and the point here
    try:
        model = open_clip.create_model(model, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def open_scorer() -> ClipScorer:
    """The configured CLIP scorer; without weights, a tiny random test model (with a loud warning).

    >>> scorer = open_scorer()   # doctest: +SKIP
    CLIP: ViT-B-32 / laion2b_s34b_b79k on cuda (loaded in 3.1 s)
    """
    try:
        scorer = ClipScorer()
        print(f"CLIP: {scorer.model_name} / {scorer.pretrained} on {scorer.device} "
              f"(loaded in {scorer.load_seconds:.1f} s)")
        return scorer
    except ClipError as err:
        checkpoint = load_settings().output_dir / "clip" / f"{TINY_MODEL}.safetensors"
        if not checkpoint.exists():
            make_tiny_checkpoint(checkpoint)
        scorer = ClipScorer(TINY_MODEL, str(checkpoint))
        print(f"No CLIP weights: {str(err).splitlines()[0]}\n"
              f"Using a TINY RANDOM TEST MODEL instead, so the code runs, but its SCORES ARE MEANINGLESS.\n"
              f"For real scores: {err.fix}")
        return scorer
