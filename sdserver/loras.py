"""LoRA files and ``<lora:name:weight>`` prompt tags, as A1111's built-in Lora extension reads them.

* **Folder** (``--lora-dir``, A1111's ``models/Lora``): every ``*.safetensors``, ``*.pt`` and ``*.ckpt``
  in it or its subfolders; a LoRA's ``name`` is its file stem (subfolders do not count, so two files with
  the same stem collide and the last one scanned wins, as in A1111); its ``alias`` is the safetensors
  metadata ``ss_output_name`` if there is one. GET /sdapi/v1/loras lists ``{name, alias, path, metadata}``;
  POST /sdapi/v1/refresh-loras rescans.
* **Tags**: ``<lora:name>``, ``<lora:name:0.6>`` (text encoder and UNet 0.6) or ``<lora:name:0.3:0.9>``
  (text encoder 0.3, UNet 0.9); ``te=``/``unet=`` name them. Every extra-network tag ``<word:...>`` is
  removed from the text that reaches the text encoder; the infotext keeps the prompt as written.
* **Unknown name**: the image is made without it (A1111 1.10: "Lora not found: x" in its comments, HTTP 200).
* **Hash** (infotext ``Lora hashes``): A1111's "addnet" hash, sha256 of a safetensors file's tensor data
  (what follows the header), of the whole file for other formats; 12 hex digits are written.

    >>> prompt, tags = parse_prompt("a cat <lora:pixel:0.5>, <lora:ink> <hypernet:x:1>")
    >>> prompt, [(tag.name, tag.te, tag.unet) for tag in tags]
    ('a cat ,', [('pixel', 0.5, 0.5), ('ink', 1.0, 1.0)])
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("sdserver")

# A1111's modules/extra_networks.py: <type:arguments>; arguments split on ":".
EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_TYPES = ("lora", "lyco")  # <lyco:...> is an alias of <lora:...> in A1111
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
# The kit's default folder: its demo LoRA (data/loras/kit-demo.safetensors), so every engine lists one.
DEFAULT_LORA_DIR = Path(__file__).resolve().parent.parent / "data" / "loras"


@dataclass(frozen=True)
class LoraTag:
    """One ``<lora:name:te:unet>`` of a prompt: the name written and its two multipliers."""

    name: str
    te: float = 1.0  # text-encoder multiplier
    unet: float = 1.0  # UNet multiplier (A1111: the text-encoder one unless given)


@dataclass(frozen=True)
class LoraFile:
    """A LoRA the server found: what GET /loras lists, and what an engine loads.

    ``mentioned`` is the name the prompt used (the alias or the file name), written in ``Lora hashes``.
    """

    name: str
    path: Path
    alias: str
    metadata: dict
    te: float = 1.0
    unet: float = 1.0
    mentioned: str = ""

    def entry(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.alias, "path": str(self.path), "metadata": self.metadata}

    @property
    def short_hash(self) -> str:
        stat = self.path.stat()  # a file replaced under the same name gets a new hash
        return lora_hash(self.path, stat.st_mtime_ns, stat.st_size)[:12]


def _number(text: str, default: float) -> float:
    try:
        return float(text)
    except ValueError:
        return default  # A1111 would raise; a typo in a weight should not lose the image


def parse_prompt(prompt: str) -> tuple[str, list[LoraTag]]:
    """The prompt without its extra-network tags, and the LoRA tags in it (in order).

    Whitespace left where a tag was is tidied (the CLIP tokenizer ignores it anyway), so
    ``"a cat <lora:x:0>"`` reaches the text encoder as ``"a cat"``.

    >>> parse_prompt("<lora:a:0.3:0.9>photo <lora:b:unet=0.2>")
    ('photo', [LoraTag(name='a', te=0.3, unet=0.9), LoraTag(name='b', te=1.0, unet=0.2)])
    """
    tags: list[LoraTag] = []

    def found(match: re.Match) -> str:
        kind, arguments = match.group(1), match.group(2).split(":")
        if kind in LORA_TYPES:
            positional = [item for item in arguments if "=" not in item]
            named = dict(item.split("=", 1) for item in arguments if "=" in item)
            if positional and positional[0]:
                te = _number(named.get("te", positional[1] if len(positional) > 1 else "1"), 1.0)
                unet = _number(named.get("unet", positional[2] if len(positional) > 2 else str(te)), te)
                tags.append(LoraTag(positional[0], te, unet))
        else:
            log.info("Skipping unknown extra network: %s", kind)
        return ""

    text = EXTRA_NETWORK_TAG.sub(found, prompt)
    if text != prompt:
        text = re.sub(r"[ \t]+", " ", text).strip()
    return text, tags


@functools.lru_cache(maxsize=256)
def lora_hash(path: Path, mtime_ns: int = 0, size: int = 0) -> str:
    """A1111's LoRA hash (sha256, hex): of the tensor data for a .safetensors file, of the whole file otherwise.
    Cached by path, modification time and size (a LoRA may be hundreds of MB; A1111 caches it too)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        if path.suffix == ".safetensors":
            size = struct.unpack("<Q", file.read(8))[0]
            file.seek(8 + size)
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path: Path) -> dict:
    """A safetensors header's ``__metadata__`` (JSON-looking values decoded, as A1111); {} for others."""
    if path.suffix != ".safetensors":
        return {}
    try:
        with open(path, "rb") as file:
            size = struct.unpack("<Q", file.read(8))[0]
            header = json.loads(file.read(size))
    except (OSError, ValueError, struct.error) as error:
        log.warning("could not read the metadata of %s: %s", path, error)
        return {}
    metadata = dict(header.get("__metadata__") or {})
    for key, value in metadata.items():
        if isinstance(value, str) and value.startswith("{"):
            try:
                metadata[key] = json.loads(value)
            except ValueError:
                pass
    return metadata


class LoraLibrary:
    """The LoRA files of one folder, scanned at start and on :meth:`refresh`.

    >>> library = LoraLibrary()  # the kit's default folder, data/loras
    >>> [entry["name"] for entry in library.entries()]
    ['kit-demo']
    >>> found, missing = library.resolve([LoraTag("kit-demo", 0.5, 0.5), LoraTag("nope")])
    >>> [(item.name, item.unet) for item in found], missing
    ([('kit-demo', 0.5)], ['nope'])
    """

    def __init__(self, folder: Optional[str | Path] = None) -> None:
        self.folder = Path(folder) if folder else DEFAULT_LORA_DIR
        self._lock = threading.Lock()
        self._files: dict[str, LoraFile] = {}
        self._lookup: dict[str, LoraFile] = {}
        self.refresh()

    def refresh(self) -> None:
        """Rescan the folder (POST /sdapi/v1/refresh-loras). A missing folder lists nothing."""
        files: dict[str, LoraFile] = {}
        if self.folder.is_dir():
            for path in sorted(self.folder.rglob("*")):
                if path.suffix.lower() in LORA_SUFFIXES and path.is_file():
                    metadata = read_metadata(path)
                    alias = str(metadata.get("ss_output_name") or path.stem)
                    files[path.stem] = LoraFile(name=path.stem, path=path.resolve(), alias=alias, metadata=metadata)
        lookup = dict(files)
        for item in files.values():
            lookup.setdefault(item.alias, item)  # a taken alias resolves to the file of that name, as in A1111
        with self._lock:
            self._files, self._lookup = files, lookup

    def entries(self) -> list[dict[str, Any]]:
        """GET /sdapi/v1/loras: ``[{name, alias, path, metadata}]``."""
        with self._lock:
            return [item.entry() for item in self._files.values()]

    def resolve(self, tags: list[LoraTag]) -> tuple[list[LoraFile], list[str]]:
        """The files the tags name (with their weights), and the names not found. A name not found
        triggers one rescan first (A1111 does too: a file copied in after start-up is found)."""
        with self._lock:
            lookup = self._lookup
        if any(tag.name not in lookup for tag in tags):
            self.refresh()
            with self._lock:
                lookup = self._lookup
        found, missing = [], []
        for tag in tags:
            item = lookup.get(tag.name)
            if item is None:
                log.info("Couldn't find Lora with name %s", tag.name)
                missing.append(tag.name)
            else:
                found.append(LoraFile(item.name, item.path, item.alias, item.metadata, tag.te, tag.unet, tag.name))
        return found, missing


def hashes_infotext(loras: list[LoraFile]) -> str:
    """A1111's ``Lora hashes`` value: ``"name: hash, ..."`` with ``:`` and ``,`` taken out of the names.

    >>> hashes_infotext([])
    ''
    """
    return ", ".join(f"{item.mentioned.replace(':', '').replace(',', '')}: {item.short_hash}" for item in loras)
