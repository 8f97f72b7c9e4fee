"""The server's settings: GET/POST /sdapi/v1/options and a request's ``override_settings``.

A1111 has hundreds of options; the kit's server keeps the ones that change what it does or
writes (see ``catalog.default_options``). Setting an unknown key is an error, as in A1111
(a 500 with a KeyError body), so a client's typo does not go unnoticed.

Example:
    >>> from sdserver.engines import get_engine
    >>> opts = Options(get_engine("preview"))
    >>> opts.update({"CLIP_stop_at_last_layers": 2})
    >>> opts.as_dict()["CLIP_stop_at_last_layers"]
    2
    >>> opts.update({"no_such_option": 1})
    Traceback (most recent call last):
    ...
    KeyError: 'no_such_option'
"""

from __future__ import annotations

import threading
from typing import Any

from .catalog import default_options
from .engines.base import Engine, model_not_found


class Options:
    """Thread-safe settings with A1111's checks (unknown key: KeyError; unknown model: RuntimeError)."""

    def __init__(self, engine: Engine) -> None:
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
        """Validate ``updates`` and return them normalised (a model name becomes its title).

        A1111 accepts a checkpoint by title, file name, stem or hash; here those of the loaded model (an
        engine that switches models loads the new one before its title is set, see routes.py).
        """
        for key in updates:
            if key not in self._values:
                raise KeyError(key)
        result = dict(updates)
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
