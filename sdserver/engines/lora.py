"""LoRAs on the diffusers engine: files loaded once into the pipeline with diffusers' PEFT integration,
then switched on and off per request.

* **Load** (:meth:`LoraAdapters.load`, once per file and model): ``pipe.load_lora_weights(folder,
  weight_name=file, adapter_name=...)`` reads A1111/kohya ``.safetensors`` files (``lora_unet_...``,
  ``lora_te_...``: diffusers converts them) and diffusers-format ones (``unet....lora_A.weight``). A file
  diffusers cannot read, or whose shapes do not fit the model (a LoRA for another architecture), is
  reported and skipped, as A1111 skips a LoRA it cannot load; what it half-injected is deleted again.
* **Activate** (:meth:`LoraAdapters.activate`, every batch, cheap): ``set_adapters(names, weights)`` with
  A1111's text-encoder and UNet multipliers per LoRA; a request without LoRAs calls ``disable_lora()``, so
  the base weights compute exactly as before (nothing is fused or reloaded).
* **Model switch**: the engine makes a new ``LoraAdapters`` for the new pipeline; the old one's LoRAs go
  with the old pipeline.

    >>> adapter_name("kit demo.v2", 3)
    'lora3_kit_demo_v2'
"""

from __future__ import annotations

import logging
import re

from ..loras import LoraFile

log = logging.getLogger("sdserver")


def adapter_name(name: str, index: int) -> str:
    """A PEFT adapter name for LoRA ``name``: unique per load, letters, digits and ``_`` only."""
    return f"lora{index}_" + re.sub(r"\W+", "_", name).strip("_")


class LoraAdapters:
    """The LoRAs loaded into one pipeline (cached by file) and which of them the next job uses."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self._adapters: dict[tuple, str] = {}  # (path, mtime, size) -> adapter name

    @staticmethod
    def _key(item: LoraFile) -> tuple:
        stat = item.path.stat()  # a file replaced under the same name is loaded again
        return str(item.path), stat.st_mtime_ns, stat.st_size

    def load(self, loras: list[LoraFile]) -> dict[str, str]:
        """Load the files not loaded yet; ``{name: why}`` for those that cannot be applied."""
        failed: dict[str, str] = {}
        for item in loras:
            key = self._key(item)
            if key in self._adapters:
                continue
            adapter = adapter_name(item.name, len(self._adapters))
            try:
                self.pipe.load_lora_weights(str(item.path.parent), weight_name=item.path.name, adapter_name=adapter,
                                            local_files_only=True)
            except Exception as error:  # noqa: BLE001 - any unreadable or unfitting file: skip it, say why
                log.warning("could not load LoRA %s: %s", item.path, error)
                self._forget(adapter)
                why = str(error).replace(str(item.path.parent), "").strip().splitlines() or [type(error).__name__]
                failed[item.name] = why[0][:200]
                continue
            self._adapters[key] = adapter
        return failed

    def _forget(self, adapter: str) -> None:
        """Delete what a failed load may have injected (e.g. the text encoder's half of it)."""
        try:
            if any(adapter in names for names in self.pipe.get_list_adapters().values()):
                self.pipe.delete_adapters(adapter)
        except Exception as error:  # noqa: BLE001 - nothing was injected, or PEFT refuses: the model is unchanged
            log.debug("nothing to delete for %s: %s", adapter, error)

    def activate(self, loras: list[LoraFile]) -> None:
        """Use exactly ``loras`` (loaded by :meth:`load`) with their weights; none: the base model."""
        chosen: dict[str, LoraFile] = {}
        for item in loras:
            adapter = self._adapters.get(self._key(item))
            if adapter is not None:
                chosen.setdefault(adapter, item)  # the same LoRA twice: its first weight counts
        if not chosen:
            # Every time, not only after a job with LoRAs: a load (even a failed one, whose deletion makes
            # another adapter active) may have switched adapters on since. It only sets flags: cheap.
            if self._adapters:
                self.pipe.disable_lora()
            return
        # Per component: a LoRA without text-encoder layers must not name the text encoder.
        components = {adapter: [part for part, names in self.pipe.get_list_adapters().items() if adapter in names]
                      for adapter in chosen}
        weights = [{part: (item.te if part.startswith("text_encoder") else item.unet) for part in components[adapter]}
                   for adapter, item in chosen.items()]
        self.pipe.enable_lora()
        self.pipe.set_adapters(list(chosen), weights)
