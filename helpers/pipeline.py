"""The full pipeline: keywords -> text -> image prompt -> N images -> scores (CLIP or another rater) -> best.

``run_pipeline`` checks its arguments and hands them to a ``PipelineRunner``, whose methods are
the stages, in the order they run. Each image is written to the run's folder as soon as it
arrives, and ``run.json`` (helpers/records.py) after each one, so a crash or Ctrl-C loses nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from .a1111 import A1111Client, A1111Error, GenerationInterrupted
from .config import configured_secrets, mask
from .errors import KitError
from .records import Candidate, PipelineError, PipelineRun, new_run_folder
from .urls import without_password

MODES = ("best", "threshold")
THRESHOLD_BATCH = 2  # images per call in threshold mode: small, so the run can stop early


def run_pipeline(user_input: str, n: int = 5, mode: str = "best", threshold: float | None = None,
                 max_images: int = 20, text_source: str = "auto", refine: bool = False,
                 out_dir: str | Path | None = None, progress: bool = True, *, client=None, llm=None,
                 scorer=None, rater=None, **generation_fields) -> PipelineRun:
    """Run keywords -> text -> prompt -> images -> scores, and pick the best image.

    ``mode="best"`` makes ``n`` images (in as few A1111 calls as the batch size allows) and keeps
    the best; ``mode="threshold"`` makes small batches until one reaches ``threshold`` or
    ``max_images`` are spent, and with ``refine`` the LLM revises the prompt between them.
    ``text_source`` is get_text's; the backends default to the settings (``scorer=False``: no
    scores); ``rater`` (helpers/raters.py) scores instead of CLIP, and ``threshold`` is on its
    scale; ``generation_fields`` are txt2img's. Without an LLM the text is retrieved and the
    prompt is the baseline; without CLIP weights ``run.best`` is None. The run says which.

    >>> run = run_pipeline("lighthouse, storm", n=4, seed=1, steps=20)   # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be 'best' or 'threshold'")
    if n < 1 or max_images < 1:
        raise ValueError("n and max_images must be at least 1")
    if "prompt" in generation_fields:
        raise ValueError("the prompt is written by the pipeline; pass keywords as user_input instead")
    threshold_from = "given"
    if mode == "threshold" and threshold is None:  # the one calibrated for the rater in use, if any
        from .config import load_settings
        from .raters import clip_rater_name, stored_threshold
        settings = load_settings()
        if rater:
            name = rater.name
        elif scorer is False:  # no scores at all: nothing to look up
            name = None
        else:  # the default rater is CLIP (the given scorer or the configured one): its name without loading it
            name = clip_rater_name(getattr(scorer, "model_name", settings.clip_model),
                                   getattr(scorer, "pretrained", settings.clip_pretrained))
        stored = stored_threshold(name) if name else None
        if stored is None:
            raise ValueError(f"mode='threshold' needs a threshold, and none is stored for {name}: pass "
                             "threshold=... (e.g. 0.3 for CLIP's cosine), or calibrate_threshold(rater, pairs) first")
        threshold = stored["threshold"]
        threshold_from = f"calibrated on {stored.get('pairs')} pairs on {stored.get('date')}"
    keywords, notes = _clean_input(user_input)
    record = PipelineRun(user_input=keywords, path=new_run_folder(keywords, out_dir), mode=mode, n=n,
                         threshold=threshold, max_images=max_images, refine=refine,
                         created=datetime.now().isoformat(timespec="seconds"))
    runner = PipelineRunner(record, text_source=text_source, progress=progress, client=client, llm=llm,
                            scorer=scorer, rater=rater, fields=generation_fields, notes=notes,
                            threshold_from=threshold_from)
    return runner.run()


def _clean_input(user_input) -> tuple[str, list[str]]:
    """The keywords as text, with a note when a lone surrogate (half an emoji), which no file or
    server takes, was replaced: one character is no reason to fail a run."""
    from .prompts import clean_text
    raw = ", ".join(map(str, user_input)) if isinstance(user_input, (list, tuple)) else str(user_input)
    cleaned = clean_text(raw)
    if not cleaned:
        raise ValueError(f"user_input={user_input!r:.80} has no text; pass a few keywords, e.g. \"lighthouse, storm\"")
    replaced = cleaned.count("\ufffd") - raw.count("\ufffd")
    note = (f"the keywords held {replaced} character(s) that are not valid Unicode (lone surrogates); "
            "each was replaced with U+FFFD")
    return cleaned, [note] if replaced else []


class PipelineRunner:
    """Runs the stages of one run (``record``, whose folder exists) and records each in run.json."""

    def __init__(self, record: PipelineRun, *, text_source: str, progress: bool, client, llm, scorer,
                 fields: dict[str, Any], notes: list[str] = (), rater=None, threshold_from: str = "given"):
        self.run_record = record
        self.text_source = text_source
        self.progress = progress
        self.client = client
        self.llm = llm
        self.scorer = scorer
        self.rater = rater
        self.threshold_from = threshold_from  # "given", or "calibrated on N pairs on DATE": run.json says which
        self.fields = dict(fields)
        self._notes: list[str] = list(notes)  # what the run says it did differently, in its message
        self.image_prompt = None

    def run(self) -> PipelineRun:
        """Run every stage. Whatever happens, run.json ends with a final status and the cause."""
        record = self.run_record
        started = time.perf_counter()
        try:
            record.save()
            self._timed("text", self.get_text)
            self._timed("prompt", self.write_prompt)
            self._timed("clip_load", self.load_scorer)
            self.generate_and_score()
        except (KeyboardInterrupt, GenerationInterrupted) as stop:
            message = "stopped by the user (Ctrl-C / Stop)" + self._keep_partial(stop)
            self._finish("interrupted", message, started)
            raise
        except Exception as err:
            self._finish("failed", f"{type(err).__name__}: {_first_line(err)}" + self._keep_partial(err), started)
            if isinstance(err, PipelineError):
                raise  # it already says what happened and where the run is
            raise PipelineError(mask(f"The pipeline failed: {err}", configured_secrets()), record) from err
        except BaseException as err:  # SystemExit and the like: not ours to handle, but recorded
            self._finish("failed", f"{type(err).__name__}: {_first_line(err)}", started)
            raise
        self._finish(record.status if record.status != "running" else "done", "; ".join(self._notes), started)
        return record

    def _keep_partial(self, err: BaseException) -> str:
        """Save the images that arrived before an error (A1111Error.generation, GenerationInterrupted's)."""
        generation = getattr(err, "generation", None)
        if generation is None or not generation.images:
            return ""
        try:
            kept = self._keep(generation, len(self.run_record.rounds) - 1)
        except Exception as failed:  # noqa: BLE001 - the record must still end
            return f"; its partial images could not be kept ({_first_line(failed)})"
        return f"; kept {len(kept)} image(s) that arrived intact"

    def _finish(self, status: str, message: str, started: float) -> None:
        self.run_record.status = status
        self.run_record.message = mask(message, configured_secrets())  # also shown by summary() and the report
        self.run_record.timings["total"] = round(time.perf_counter() - started, 3)
        self.run_record.save()

    def _add_time(self, stage: str, started: float) -> None:
        timings = self.run_record.timings
        timings[stage] = round(timings.get(stage, 0) + time.perf_counter() - started, 3)

    def _timed(self, stage: str, action) -> Any:
        started = time.perf_counter()
        try:
            return action()
        finally:
            self._add_time(stage, started)
            self.run_record.save()

    # ----- the stages, in the order they run ---------------------------------------------------

    def get_text(self) -> None:
        """The text, from the LLM or from retrieval (text_source says which may be used)."""
        from .llm import LLM
        from .prompts import valid_unicode
        from .text import get_text
        if self.llm is None:
            self.llm = LLM()
        self.llm_available = self.llm.available()
        text = get_text(self.run_record.user_input, source=self.text_source, llm=self.llm)
        valid = valid_unicode(text.text)  # an LLM's JSON may escape half an emoji: not text CLIP can read
        if valid != text.text:
            self._notes.append("the text held characters that are not valid Unicode (lone surrogates); "
                               "each was replaced with U+FFFD")
            text.text = valid
        self.text = text
        self.run_record.text = {"text": text.text, "source": text.source, "keywords": text.keywords,
                                "title": text.title, "model": text.model, "note": text.note}
        if text.note:
            self._notes.append(text.note)

    def write_prompt(self) -> None:
        from .llm import LLMError
        from .prompts import baseline_prompt, write_image_prompt
        prompt = None
        if self.llm_available:
            try:
                prompt = write_image_prompt(self.text.text, llm=self.llm)
            except LLMError as err:
                self._notes.append(f"the LLM could not write the prompt ({_first_line(err)}); used the baseline")
        if prompt is None:
            prompt = baseline_prompt(self.text.text, keywords=self.text.keywords)
            if not self.llm_available:
                self._notes.append("no LLM: the prompt is the rule-based baseline")
        self._set_prompt(prompt)

    def _set_prompt(self, prompt) -> None:
        self.image_prompt = prompt
        self.run_record.prompt = prompt
        self.run_record.rounds.append({"round": len(self.run_record.rounds), **asdict(prompt)})

    def load_scorer(self) -> None:
        """The rater: the one given, else CLIP (``scorer``: a ClipScorer, None the configured one, False none)."""
        from .clipqa import ClipError
        from .raters import clip_rater
        if self.rater is None and self.scorer is not False:
            try:
                self.rater = clip_rater(self.scorer)
            except ClipError as err:
                self._notes.append(f"unscored: {_first_line(err)} {err.fix}")
        if self.rater:
            self.run_record.scorer = self.rater.info() if hasattr(self.rater, "info") else \
                {"rater": self.rater.name, "meaningful": True}
            if self.run_record.mode == "threshold":
                self.run_record.scorer["threshold_from"] = self.threshold_from

    def generate_and_score(self) -> None:
        record = self.run_record
        client = self.client
        if client is None:
            client = A1111Client()
            client.adapt_to_model()  # e.g. 1 step at CFG 1 for sd-turbo, unless the fields say otherwise
        self.client = client
        batch = int(self.fields.pop("batch_size", 0) or 0)
        if record.mode == "best":
            batch, budget = batch or record.n, record.n
        else:
            batch, budget = batch or THRESHOLD_BATCH, record.max_images
        # What is sent: the client's defaults (which suit the model) under the fields given.
        defaults = {k: v for k, v in (getattr(client, "defaults", None) or {}).items() if k != "override_settings"}
        record.generation = {**defaults, **self.fields, "batch_size": batch}
        first_seed = self.fields.pop("seed", -1)
        if record.mode == "threshold" and not self.rater:
            budget = min(budget, record.n)
            self._notes.append("threshold mode needs scores: made n unscored candidates instead")
        while len(record.candidates) < budget:
            size = min(batch, budget - len(record.candidates))
            seed = first_seed + len(record.candidates) if first_seed not in (None, -1) else -1
            started = time.perf_counter()
            generation = client.txt2img(self.image_prompt.prompt, negative_prompt=self.image_prompt.negative_prompt,
                                        batch_size=size, seed=seed, progress=self.progress, **self.fields)
            self._add_time("generate", started)
            record.server = {"url": without_password(client.base_url), "placeholder": generation.is_placeholder,
                             "model": generation.info.get("sd_model_name")}
            new = self._keep(generation, len(record.rounds) - 1)
            if not new and not generation.interrupted:
                # Asking again would loop for ever against a server that always answers so.
                raise PipelineError(
                    f"The server at {record.server['url']} answered txt2img without any image (asked for {size}; "
                    f"it sent {len(generation.images)} image(s) and {len(generation.seeds)} seed(s)), so the run "
                    "stopped instead of asking again.\nFix: look at the server's console for the error, and check "
                    "that SD_URL points at A1111 (or a compatible server) started with --api.", record)
            if generation.interrupted:  # someone pressed Interrupt in A1111 (or client.interrupt())
                record.status = "interrupted"
                self._notes.append(f"A1111's generation was interrupted; kept {len(new)} partial image(s)")
                return
            scoring = record.mode == "threshold" and self.rater
            if scoring and any(c.score is not None and c.score >= record.threshold for c in new):
                record.status = "threshold met"
                return
            if scoring and record.refine and len(record.candidates) < budget:
                self._timed("refine", lambda new=new: self.refine_prompt(new))
        if record.mode == "threshold" and self.rater:
            record.status = "max_images reached"

    def _keep(self, generation, round_no: int) -> list[Candidate]:
        """Save each image of a generation, score it, and record it at once."""
        record = self.run_record
        infotexts = generation.infotexts
        new = []
        for image_no, (_, seed) in enumerate(zip(generation.images, generation.seeds)):
            index = len(record.candidates)
            candidate = Candidate(index=index, seed=seed, file=f"cand-{index:02d}.png", round=max(round_no, 0),
                                  infotext=infotexts[image_no] if image_no < len(infotexts) else "",
                                  run_path=record.path)
            candidate.path.write_bytes(generation.png_data(image_no))
            record.candidates.append(candidate)
            record.save()  # the file exists now; record it before scoring can fail
            new.append(candidate)
        if self.rater and new:  # all images of one call at once (one CLIP batch)
            started = time.perf_counter()
            try:
                scores = self.rater.score(self.text.text, generation.images[: len(new)])
            except KitError as err:  # e.g. the LLM server went away: the images stay, unscored, and it is said
                self._notes.append(f"unscored from candidate #{new[0].index} on: {self.rater.name} failed "
                                   f"({_first_line(err)})")
                self.rater, scores = None, []
            details = list(getattr(self.rater, "details", None) or [])
            if self.rater and len(scores) != len(new):
                self._notes.append(f"{self.rater.name} gave {len(scores)} score(s) for {len(new)} image(s)")
            for number, (candidate, score) in enumerate(zip(new, scores)):
                candidate.score = round(float(score), 4) if math.isfinite(float(score)) else None
                candidate.rating = details[number] if number < len(details) else {}  # e.g. what is missing
            self._add_time("score", started)
            record.save()
        return new

    def refine_prompt(self, last: list[Candidate]) -> None:
        """Let the LLM revise the prompt from the text, the previous prompt and its scores."""
        from .llm import LLMError
        from .prompts import CLIP_TOKEN_LIMIT, PROMPT_SCHEMA, ImagePrompt, fit_prompt, parse_prompt_reply
        from .text import load_system_prompt
        if not self.llm_available:
            self._notes.append("refine needs an LLM: kept the same prompt")
            self.run_record.refine = False
            return
        scores = ", ".join(f"{c.score:.3f}" for c in last if c.score is not None)
        name = "CLIP" if self.rater.name.startswith("clip") else self.rater.name
        message = (f"Text:\n{self.text.text}\n\nPrevious prompt: {self.image_prompt.prompt}\n"
                   f"{name} scores of its images: {scores} (target {self.run_record.threshold})")
        best = max(last, key=lambda c: c.score if c.score is not None else -2)
        if best.rating.get("missing"):  # question checks say what the image lacks: the most useful hint
            message += "\nThe best image fails these checks: " + " ".join(best.rating["missing"])
        try:
            caption = self.client.interrogate(best.image, timeout=60)
        except A1111Error:
            caption = ""  # no captioner (or a slow first download): refine from the scores alone
        if caption:  # the caption route compares the caption with the ORIGINAL text, not the prompt
            message += f"\nA captioner describes the best of those images as: {caption}"
            if getattr(self.rater, "scorer", None):
                fit = self.rater.scorer.text_similarity(self.text.text, caption, long_text="chunks")
                message += f"\nCLIP cosine of that caption with the text: {fit:.3f}"
        try:
            reply = self.llm.chat(message, system=load_system_prompt("refine_system"), temperature=0.7, max_tokens=400,
                                  json_schema=PROMPT_SCHEMA, schema_name="image_prompt")
        except LLMError as err:
            self._notes.append(f"refine failed ({_first_line(err)}); kept the prompt")
            return
        prompt, negative, note = parse_prompt_reply(reply)
        if not prompt:
            self._notes.append(f"round {len(self.run_record.rounds)}: the LLM gave no usable prompt ({note}); "
                               "kept the prompt")
            return
        if prompt == self.image_prompt.prompt:
            self._notes.append(f"round {len(self.run_record.rounds)}: the LLM kept the same prompt")
        self._set_prompt(fit_prompt(ImagePrompt(prompt, negative, "llm-refined", note=note), CLIP_TOKEN_LIMIT))


def _first_line(err: BaseException) -> str:
    """The first line of an error's text, or its type when it has none (``ValueError()``)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else f"{type(err).__name__} without a message"
