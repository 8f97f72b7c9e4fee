"""The server's settings: GET/POST /sdapi/v1/options and a request's ``override_settings``.

The kit's server has every option A1111 1.10 has, with A1111's defaults (``catalog.a1111_options``, a
JSON table), so scripts written for A1111 can read and set them. Only those in ``catalog.KIT_USES``
change what the server makes or writes; the others are stored and reported, and change nothing.

Setting them behaves as A1111's ``opts.set(key, value, is_api=True)``:

* an unknown key is an error (a 500 with a KeyError body), so a client's typo does not go unnoticed;
  an unknown key with the value null is ignored, as in A1111;
* paths and file-name patterns (``outdir_*``, ...) are silently left unchanged, as in an A1111 started
  with ``--hide-ui-dir-config`` (the kit saves no files, and a class shares one server);
* ``api_enable_requests``, ``api_forbid_local_requests``, ``api_useragent`` are never changed through
  the API, and the Settings tab's explanations (``sd_vae_explanation``, ...) are never saved.

Unlike A1111, a POST with an unknown key changes nothing at all (A1111 has set the keys before it).

Example:
    >>> from sdserver.engines import get_engine
    >>> opts = Options(get_engine("preview"))
    >>> opts.update({"CLIP_stop_at_last_layers": 2, "send_seed": False, "outdir_samples": "/etc"})
    >>> [opts.as_dict()[key] for key in ("CLIP_stop_at_last_layers", "send_seed", "outdir_samples")]
    [2, False, '']
    >>> opts.update({"no_such_option": 1})
    Traceback (most recent call last):
    ...
    KeyError: 'no_such_option'
"""

from __future__ import annotations

import threading
from typing import Any

from .catalog import a1111_options, default_options
from .engines.base import Engine, model_not_found


class Options:
    """Thread-safe settings with A1111's checks (unknown key: KeyError; unknown model: RuntimeError)."""

    def __init__(self, engine: Engine) -> None:
        table = a1111_options()
        self._unchangeable = frozenset(table["restricted"] + table["api_restricted"] + table["html"])
        self._engine = engine
        self._lock = threading.Lock()
        self._values = {**default_options(engine.model_title), **self.loaded_model()}

    def loaded_model(self) -> dict[str, Any]:
        """The two options that name the engine's loaded model (after a switch, the new one)."""
        return {"sd_model_checkpoint": self._engine.model_title, "sd_checkpoint_hash": self._engine.model_sha256}

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def checked(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Validate ``updates`` and return those to set, normalised (a model name becomes its title).

        Keys A1111 does not change through its API (paths, ``api_*``, explanations; unknown ones set to null)
        are left out.

        A1111 accepts a checkpoint by title, file name, stem or hash; here those of the loaded model (an
        engine that switches models loads the new one before its title is set, see routes.py).
        """
        for key, value in updates.items():
            if key not in self._values and value is not None:
                raise KeyError(key)
        result = {key: value for key, value in updates.items()
                  if key in self._values and key not in self._unchangeable}
        if "sd_model_checkpoint" in result:
            name, engine = result["sd_model_checkpoint"], self._engine
            if not isinstance(name, str) or name not in engine.model_names():
                raise RuntimeError(model_not_found(name, [engine.model_title]))
            result["sd_model_checkpoint"] = engine.model_title
        return result

    def update(self, updates: dict[str, Any]) -> None:
        """POST /options: check every key first, then set them all (all or nothing)."""
        updates = self.checked(updates)
        with self._lock:
            self._values.update(updates)
