"""``A1111Client``: call AUTOMATIC1111's web UI API (``/sdapi/v1/*``) from Python.

Works against A1111 started with ``--api``, Forge, SD.Next and the kit's own server (``make serve``). Over a
bare ``requests.post`` it catches misspelled fields, decodes images and the real seeds, shows live progress, keeps
partial images when you press Stop, and turns every failure into an A1111Error that says what to fix.

    >>> client = A1111Client()                                                          # doctest: +SKIP
    >>> gen = client.txt2img("a lighthouse at dusk, oil painting", steps=20, seed=1)   # doctest: +SKIP
    >>> gen.save("outputs/lighthouse")                                                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import difflib
import re
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import requests

from .a1111_fields import validate_txt2img
from .a1111_http import A1111Error, A1111Http, InvalidRequest, _short
from .generation import NOT_A1111, Generation, ResponseError
from .images import encode_b64
from .progress import LiveProgress
from .urls import without_password

__all__ = ["A1111Client", "A1111Error", "InvalidRequest", "GenerationInterrupted", "Generation", "validate_txt2img",
           "CLIENT_DEFAULTS"]

# What the client sends unless you say otherwise. A1111's API defaults are 50 steps and the
# "Euler" sampler (used whenever sampler_name is missing); the UI's 20 steps is the usual start.
# override_settings is always sent because Forge crashes on a missing one.
CLIENT_DEFAULTS: dict[str, Any] = {"sampler_name": "Euler a", "steps": 20, "cfg_scale": 7.0, "override_settings": {}}

# Live progress gives up after this many unusable /progress answers in a row (the generation goes on).
MAX_POLL_FAILURES = 5


class GenerationInterrupted(KeyboardInterrupt):
    """You stopped a generation (Ctrl-C / Stop); what the server made is in ``.generation`` and ``client.last``."""

    def __init__(self, generation: Generation | None):
        self.generation = generation
        count = len(generation.images) if generation else 0
        super().__init__(f"Generation stopped; {count} partial image(s) kept in client.last")


class A1111Client(A1111Http):
    """txt2img, progress, interrupt, options and lists over :class:`A1111Http` (same arguments).

    >>> A1111Client("http://127.0.0.1:7860")
    A1111Client('http://127.0.0.1:7860', auth=None)
    """

    def __init__(self, base_url: str | None = None, auth=None, timeout: float | None = None,
                 connect_timeout: float | None = None):
        super().__init__(base_url, auth, timeout, connect_timeout)
        self.last: Generation | None = None  # the latest result, partial ones included
        self.placeholder = False  # set by connect_a1111() for the kit's preview server
        # Sent with every txt2img unless you pass the field, e.g. client.defaults["steps"] = 30
        self.defaults: dict[str, Any] = copy.deepcopy(CLIENT_DEFAULTS)
        self.hints = None  # the loaded model's ModelHints, set by connect_a1111()
        self._running = 0  # generations in flight from this client
        self._interrupted = False  # interrupt() was called while one ran
        self._workers: ThreadPoolExecutor | None = None  # the request threads, made once and reused
        self._offered: tuple[set, set, set] | None = None  # the server's samplers, schedules, their aliases

    def __repr__(self) -> str:
        auth = f"'{self._auth[0]}:********'" if self._auth else "None"
        return f"A1111Client({without_password(self.base_url)!r}, auth={auth})"

    def txt2img(self, prompt: str, *, progress: bool = False, allow_empty_prompt: bool = False,
                **fields) -> Generation:
        """Generate images from a prompt; returns a Generation. Any txt2img field of A1111's API can be passed.

        ``progress=True`` shows a progress bar (and the live preview in a notebook). Fields you leave out come
        from ``client.defaults``, then from the server's defaults. Pressing Stop (Ctrl-C) tells the server to
        stop and raises GenerationInterrupted, the partial images kept in ``client.last``; a job that anyone
        else interrupts comes back with ``gen.interrupted == True``. An unreadable answer raises A1111Error,
        with its good images (if any) in ``err.generation`` and ``client.last``.

        >>> gen = client.txt2img("a red fox in snow", seed=7, steps=20, batch_size=2)   # doctest: +SKIP
        >>> gen.seeds                                                                   # doctest: +SKIP
        [7, 8]
        """
        return self._generate("txt2img", prompt, fields, progress, allow_empty_prompt)

    def img2img(self, images, prompt: str, *, denoising_strength: float = 0.75, progress: bool = False,
                allow_empty_prompt: bool = False, **fields) -> Generation:
        """Generate images from a start image (a PIL image or a file's path, or a list: one per image of the
        batch) and a prompt; like txt2img otherwise. 0 keeps the image, 1 replaces it.

        >>> gen = client.img2img("outputs/fox.png", "a red fox, oil painting", denoising_strength=0.5)  # doctest: +SKIP
        """
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        fields = {**fields, "init_images": [encode_b64(image) for image in images],
                  "denoising_strength": denoising_strength}
        return self._generate("img2img", prompt, fields, progress, allow_empty_prompt)

    def _generate(self, path: str, prompt: str, fields: dict, progress: bool, allow_empty_prompt: bool) -> Generation:
        payload = {**copy.deepcopy(self.defaults), **fields, "prompt": prompt}
        if payload.get("override_settings") is None:
            payload["override_settings"] = {}
        # allow_empty_prompt skips only the empty-prompt check: the other checks see a stand-in prompt
        validate_txt2img({**payload, "prompt": "x"} if allow_empty_prompt and isinstance(prompt, str) else payload,
                         path)
        self._check_names(payload)
        total = int(payload.get("steps") or 1) * int(payload.get("n_iter") or 1) * (1 + bool(payload.get("enable_hr")))
        self._running += 1
        self._interrupted = False
        try:
            body = self._run_with_progress(payload, total if progress else 0, path)
        finally:
            self._running -= 1
        generation = self._read_generation(body, path)
        # A1111 answers 200 after an interrupt, with the images made so far.
        generation.interrupted = self._interrupted or self._server_says_interrupted(generation)
        self.last = generation
        self._warn_about_loras(prompt, generation)
        return generation

    def _check_names(self, payload: dict) -> None:
        """A1111 silently uses its first sampler (DPM++ 2M) or the Automatic schedule for a name it does not
        have: names other than the defaults are checked against the server's lists (asked once per client)."""
        asked = {field: payload.get(field) for field in ("sampler_name", "scheduler")}
        if all(value in (None, "", self.defaults.get(field)) for field, value in asked.items()):
            return
        if self._offered is None:
            try:
                schedulers = self.get("schedulers")  # A1111 reads a schedule by its name or its label
                self._offered = (set(self.samplers()), {item.get(key) for item in schedulers
                                                        for key in ("name", "label")} - {None},
                                 {alias for item in schedulers for alias in item.get("aliases") or []})
            except (A1111Error, AttributeError, TypeError):
                self._offered = (set(), set(), set())  # a server without the lists (before 1.9): not checked
        samplers, schedulers, aliases = self._offered
        sampler, scheduler = asked["sampler_name"], asked["scheduler"]
        # "DPM++ 2M Karras", the names before 1.9, still work: a sampler and a schedule's name, label or alias
        if samplers and sampler and sampler not in samplers and not any(
                sampler.endswith(" " + name) and sampler[:-len(name) - 1] in samplers for name in schedulers | aliases):
            self._unknown("sampler", sampler, samplers, "its first sampler (DPM++ 2M)", "samplers")
        if schedulers and scheduler and scheduler not in schedulers:
            self._unknown("scheduler", scheduler, schedulers, "the Automatic schedule", "schedulers")

    @staticmethod
    def _unknown(kind: str, name: str, offered: set, instead: str, method: str):
        guess = next(iter(difflib.get_close_matches(name, offered, n=1)), None)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        raise InvalidRequest(f"Unknown {kind} '{name}'{hint}. A1111 would silently use {instead} instead.",
                             fix=f"Use one of client.{method}(): " + ", ".join(sorted(offered)))

    def _warn_about_loras(self, prompt, generation: Generation) -> None:
        """A server makes the images without a LoRA it cannot find or load (HTTP 200): say so. The kit's server
        says it in ``info["comments"]``; A1111's answer does not, so its LoRA list is compared with the prompt."""
        note = generation.info.get("comments")
        wanted = set(re.findall(r"<(?:lora|lyco):([^:>]+)", prompt)) if isinstance(prompt, str) else set()
        if not note and wanted:
            try:
                known = {item.get(key) for item in self.get("loras") for key in ("name", "alias")}
            except (A1111Error, AttributeError, TypeError):
                return  # no usable list: nothing to compare with
            note = f"Lora not found: {', '.join(sorted(wanted - known))}" if wanted - known else ""
        if note:
            warnings.warn(f"{note}; the images were made without it.\nFix: use a name from client.loras() (after "
                          "copying a file into the server's LoRA folder, call client.refresh_loras()).", stacklevel=4)

    def _read_generation(self, body: Any, path: str = "txt2img") -> Generation:
        """Read a txt2img answer; a partly broken one's good images go to ``err.generation`` and ``client.last``."""
        shown = without_password(self._url(path))
        try:
            return Generation.from_response(body)
        except ResponseError as err:
            kept = ""
            if err.partial is not None:
                self.last = err.partial
                kept = " (in err.generation and client.last)"
            raise A1111Error(f"Could not read the answer of {shown}: {err}{kept}.", url=shown, fix=err.fix,
                             generation=err.partial) from None

    def _server_says_interrupted(self, generation: Generation) -> bool:
        """Did someone else interrupt the job? A1111's answer does not say; two signs do: fewer images than
        seeds, and /progress's ``interrupted`` flag (kept until the next job) with our ``job_timestamp``. The kit's
        server says it in ``info["interrupted"]``, so only other servers are asked."""
        info = generation.info
        seeds = info.get("all_seeds")
        # A server that marks it in info (not A1111 1.10), or fewer images than seeds:
        if info.get("interrupted") is True or (isinstance(seeds, list) and 0 < len(generation.images) < len(seeds)):
            return True
        if str(info.get("version", "")).startswith("kit-"):
            return False  # the kit's server marks every interrupted answer (above): no request needed
        try:
            answer = self.request("GET", "progress", params={"skip_current_image": "true"}, timeout=10)
        except A1111Error:
            return False  # no progress endpoint: nothing more to learn
        state = answer.get("state") if isinstance(answer, dict) else None
        if not isinstance(state, dict) or state.get("interrupted") is not True:
            return False
        ours, theirs = info.get("job_timestamp"), state.get("job_timestamp")
        return ours is None or theirs is None or str(ours) == str(theirs)

    def _run_with_progress(self, payload: dict, total_steps: int, path: str = "txt2img") -> dict:
        """POST in a worker thread (made once per client); this thread polls progress and handles Ctrl-C. A thread
        even for short calls: Stop cannot wake a thread blocked reading a socket on Windows; this one waits 0.5 s."""
        bar = LiveProgress(total_steps) if total_steps else None
        poll_session = self._new_session() if bar else None
        if self._workers is None:  # more than one thread only while calls overlap
            self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="a1111-request")
        future = self._workers.submit(self.request, "POST", path, json=payload)
        finished = False
        failures = 0  # unusable /progress answers in a row
        try:
            while not wait([future], timeout=0.5).done:
                if bar and failures < MAX_POLL_FAILURES:
                    problem = self._poll_progress(bar, poll_session)
                    failures = failures + 1 if problem else 0
                    if failures == MAX_POLL_FAILURES:
                        warnings.warn(f"Live progress stopped polling {without_password(self._url('progress'))} "
                                      f"after {failures} unusable answers in a row (last: {problem}); the "
                                      "generation itself goes on.", stacklevel=4)
            body = future.result()
            finished = True
            return body
        except KeyboardInterrupt:
            raise GenerationInterrupted(self._stop_and_collect(future, path)) from None
        finally:
            if bar:
                bar.close(finished=finished)
            if poll_session:
                poll_session.close()

    def _poll_progress(self, bar, session: requests.Session) -> str:
        """Ask /progress once and move the bar; returns "" or what went wrong (never raises: progress is a nicety)."""
        try:
            answer = self.request("GET", "progress", timeout=5, session=session)
            return "" if bar.update(answer) else f"an answer of another shape ({_short(answer, 60)})"
        except A1111Error as err:
            return _short(str(err).partition("\n")[0].replace(f"{err.url} ", ""), 120)
        except Exception as err:  # noqa: BLE001 - see the docstring
            return f"{type(err).__name__}: {_short(err, 100)}"

    def _stop_and_collect(self, future, path: str = "txt2img") -> Generation | None:
        """Tell the server to stop, then keep what it returns (A1111 answers 200 with partial images)."""
        try:
            self.interrupt()
            body = future.result(timeout=30)
            generation = self._read_generation(body, path)
        except A1111Error as err:
            generation = err.generation  # the good images of a partly broken answer, if any
        except (FutureTimeout, KeyboardInterrupt):
            return None
        if generation is not None:
            generation.interrupted = True
            self.last = generation
        return generation

    def progress(self, skip_current_image: bool = False) -> dict:
        """The server's progress: ``progress`` (0..1), ``eta_relative``, ``state``, ``current_image``.

        >>> client.progress()["state"]["job_count"]   # doctest: +SKIP
        0
        """
        answer = self.request("GET", "progress", params={"skip_current_image": str(skip_current_image).lower()},
                              timeout=30)
        ok = isinstance(answer, dict) and isinstance(answer.get("state", {}), dict)
        return self._expect("progress", answer, ok, "an object with a 'state' object")

    def interrupt(self) -> None:
        """Stop the running generation (on a shared server, whoever's it is); txt2img still returns what was made."""
        if self._running:
            self._interrupted = True
        self.request("POST", "interrupt", json={}, timeout=30)

    def _expect(self, path: str, answer: Any, ok: bool, expected: str) -> Any:
        """``answer`` when ``ok``, else an A1111Error saying what GET/POST ``path`` answered instead."""
        if ok:
            return answer
        shown = without_password(self._url(path))
        raise A1111Error(f"{shown} answered {self._clean(_short(repr(answer), 80))}, not {expected}.", url=shown,
                         fix=f"{NOT_A1111} If it is, its console or log may show what went wrong.")

    def _names(self, path: str, key: str) -> list[str]:
        """The ``key`` of each object in the list that GET ``path`` answers (models, samplers, ...)."""
        answer = self.get(path)
        ok = isinstance(answer, list) and all(isinstance(item, dict) and isinstance(item.get(key), str)
                                              for item in answer)
        return [item[key] for item in self._expect(path, answer, ok, f"a list of objects with a '{key}' text")]

    def options(self) -> dict:
        """All server settings, e.g. ``client.options()["sd_model_checkpoint"]``."""
        answer = self.get("options")
        return self._expect("options", answer, isinstance(answer, dict), "an object of settings")

    def set_options(self, **options) -> None:
        """Change server settings for everyone, e.g. ``client.set_options(CLIP_stop_at_last_layers=2)``."""
        self.request("POST", "options", json=options, timeout=max(self.timeout, 60))

    def adapt_to_model(self):
        """Make the settings that suit the loaded model (helpers.model_hints) the defaults; returns the hints."""
        from .model_hints import model_hints

        self.hints = model_hints(self)
        self.defaults.update(self.hints.defaults)
        return self.hints

    def models(self) -> list[str]:
        """Titles of the checkpoints the server has, e.g. ``['v1-5-pruned-emaonly.safetensors [6ce0161689]']``."""
        return self._names("sd-models", "title")

    def loras(self) -> list[str]:
        """Names of the server's LoRAs, for ``<lora:name:weight>`` in a prompt, e.g. ``['kit-demo']``."""
        return self._names("loras", "name")

    def refresh_loras(self) -> None:
        """Make the server rescan its LoRA folder (after a file was copied in)."""
        self.request("POST", "refresh-loras")

    def samplers(self) -> list[str]:
        """Sampler names to use as ``sampler_name``, e.g. ``['DPM++ 2M', 'Euler a', ...]``."""
        return self._names("samplers", "name")

    def schedulers(self) -> list[str]:
        """Scheduler labels to use as ``scheduler``, e.g. ``['Automatic', 'Karras', ...]`` (A1111 1.9+)."""
        return self._names("schedulers", "label")

    def interrogate(self, image, model: str = "clip", timeout: float | None = None) -> str:
        """Ask the server to caption an image (``model`` "clip" or "deepdanbooru"); returns the caption.
        A1111 downloads its captioning model on first use, so the first call can take minutes."""
        answer = self.request("POST", "interrogate", json={"image": encode_b64(image), "model": model}, timeout=timeout)
        ok = isinstance(answer, dict) and isinstance(answer.get("caption"), str)
        caption = self._expect("interrogate", answer, ok, "an object with a 'caption' text")["caption"]
        if caption.rstrip().endswith("<error>"):  # A1111 answers 200 and appends this when captioning failed
            shown = without_password(self._url("interrogate"))
            raise A1111Error(f"{shown} could not caption the image (it answered {_short(caption, 80)!r}).", url=shown,
                             fix="A1111's console says why: usually its captioning model (BLIP) could not be "
                                 "downloaded, which it does on first use and needs internet for.")
        return caption
