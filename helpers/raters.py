"""Raters: how well images match a text, by CLIP, by asking models, or by your own function.

A rater is any object with a ``name`` and ``score(text, images) -> list[float]`` (higher is better, NaN
where it could not judge); ``run_pipeline(..., rater=...)`` takes any. The kit's raters also keep
``details[i]``: how image i was judged (the caption and its route, or each answer and what is ``missing``).

    >>> rater = question_rater(LLM())                     # doctest: +SKIP
    >>> rater.score("a red fox in snow", gen.images), rater.details[0]["missing"]   # doctest: +SKIP
    ([0.67, 1.0], ['Is there snow?'])
"""

from __future__ import annotations

import json
import math
import re
import warnings
from datetime import datetime
from pathlib import Path

from .clipqa import ClipScorer
from .config import load_settings
from .errors import KitError
from .images import as_rgb
from .llm import LLM, LLMError
from .records import write_atomic
from .text import load_system_prompt

QUESTIONS_SYSTEM = load_system_prompt("questions_system")  # data/prompts/: edit it freely
THRESHOLDS_FILE = "thresholds.json"  # in OUTPUT_DIR: {rater's name: calibrate_threshold's record}
QUESTIONS_SCHEMA = {"type": "object", "required": ["questions"], "properties": {
    "questions": {"type": "array", "minItems": 3, "maxItems": 6, "items": {"type": "string", "maxLength": 150}}}}


def _listed(images) -> list:
    return [images] if isinstance(images, (str, Path)) or hasattr(images, "convert") else list(images)


def parse_yes_no(answer: str) -> str | None:
    """"yes", "no" or None from a model's free answer: its first word, else the only one of the two it uses.

    >>> parse_yes_no("Yes, it does."), parse_yes_no("**No**"), parse_yes_no("I cannot tell.")
    ('yes', 'no', None)
    """
    answer = re.sub(r"<think>.*?</think>", "", str(answer), flags=re.S | re.I)
    words = re.findall(r"[a-z]+", answer.lower())
    if words and words[0] in ("yes", "no"):
        return words[0]
    found = {word for word in words if word in ("yes", "no")}
    return found.pop() if len(found) == 1 else None


class Rater:
    """The kit's raters (see above), plus ``meaningful`` (False: a test model) and ``info()`` for run.json."""

    meaningful = True

    def __init__(self, name: str, fn=None, llm: LLM | None = None):
        self.name, self.fn, self.llm, self.details = name, fn, llm, []

    def score(self, text: str, images) -> list[float]:
        self.details = []
        scores = []
        for image in _listed(images):
            detail: dict = {}
            value = self.score_one(text, as_rgb(image), detail)
            try:
                scores.append(float(value))
            except (TypeError, ValueError):  # e.g. None from a student's function that forgot to return
                raise KitError(f"The rater {self.name!r} gave {value!r} for image {len(scores)}, not a number.",
                               "Return a float (float('nan') where it cannot judge an image).") from None
            self.details.append(detail)
        return scores

    def score_one(self, text: str, image, detail: dict) -> float:
        return self.fn(text, image)

    def info(self) -> dict:
        return {"rater": self.name, "meaningful": self.meaningful}


class ClipRater(Rater):
    def __init__(self, scorer: ClipScorer):
        super().__init__(clip_rater_name(scorer.model_name, scorer.pretrained))
        self.scorer, self.meaningful = scorer, scorer.meaningful

    def score(self, text: str, images) -> list[float]:  # all images in one CLIP batch
        images = _listed(images)
        self.details = [{} for _ in images]
        return self.scorer.similarity(text, images, long_text="chunks") if images else []

    def info(self) -> dict:
        return {**super().info(), "model": self.scorer.model_name, "pretrained": str(self.scorer.pretrained)}


def clip_rater_name(model: str, weights) -> str:
    """"clip:<model>/<weights' tag or checkpoint file name>": a threshold holds for those weights only."""
    return f"clip:{model}/{Path(str(weights)).name}"


def clip_rater(scorer: ClipScorer | None = None) -> Rater:
    """CLIP's cosine of text and image (``scorer``: a ClipScorer, default the configured one).

    >>> clip_rater().score("a red fox", ["fox.png"])   # doctest: +SKIP
    [0.31]
    """
    return ClipRater(scorer or ClipScorer())


class CaptionRater(Rater):
    def __init__(self, llm: LLM | None, captioner=None, scorer: ClipScorer | None = None, long_text: str = "chunks"):
        super().__init__("caption", llm=llm)
        self.captioner, self.scorer, self.long_text = captioner, scorer, long_text

    def score_one(self, text: str, image, detail: dict) -> float:
        try:
            detail["caption"], detail["captioned_by"] = self._caption(image)
        except KitError as err:  # no captioner answered (A1111's interrogate failed): this image is not judged
            detail.update(caption="", captioned_by="nothing", compared_by="nothing", placeholder=False,
                          caption_error=err.message)
            return float("nan")
        detail["placeholder"] = "placeholder" in detail["caption"].lower()  # the kit's server cannot caption
        if self.llm is not None and self.llm.embed_model:
            try:
                a, b = self.llm.embed([text, detail["caption"]])
                detail["compared_by"] = f"embeddings ({self.llm.embed_model})"
                return sum(x * y for x, y in zip(a, b)) / (math.hypot(*a) * math.hypot(*b) or 1.0)
            except LLMError as err:
                detail["embed_error"] = err.message
        self.scorer = self.scorer or ClipScorer()
        detail["compared_by"] = f"CLIP text encoder ({self.scorer.model_name})"
        return self.scorer.text_similarity(text, detail["caption"], long_text=self.long_text)

    def _caption(self, image) -> tuple[str, str]:
        if self.llm is not None:
            try:
                return self.llm.describe(image), f"vision model ({self.llm.vision_model})"
            except LLMError as err:
                self.vision_error = err.message  # then A1111's interrogate
        if self.captioner is None:
            from .a1111 import A1111Client
            self.captioner = A1111Client().interrogate
        return str(self.captioner(image)), "A1111 interrogate"


def caption_rater(llm: LLM | None = None, *, captioner=None, scorer: ClipScorer | None = None) -> Rater:
    """The course page's caption route: caption each image with ``llm``'s vision model (else ``captioner``,
    default A1111's ``interrogate``) and compare the caption with the ORIGINAL text by cosine of the server's
    embeddings (``llm.embed_model``), else of CLIP's text encoder. ``details`` say which route was taken.

    >>> caption_rater(LLM(embed_model="nomic-embed-text")).score(text.text, gen.images)   # doctest: +SKIP
    """
    return CaptionRater(llm, captioner, scorer)


class QuestionRater(Rater):
    def __init__(self, llm: LLM):
        super().__init__("questions", llm=llm)
        self.questions: dict[str, list[str]] = {}  # per text: they do not depend on the image

    def questions_for(self, text: str) -> list[str]:
        """The yes/no questions the LLM writes for ``text`` (asked once per text)."""
        if text not in self.questions:
            from .prompts import _json_objects
            reply = self.llm.chat(text, system=QUESTIONS_SYSTEM, temperature=0, max_tokens=400,
                                  json_schema=QUESTIONS_SCHEMA, schema_name="questions")
            found = [q for obj in _json_objects(reply, 3) for q in obj.get("questions", []) if isinstance(q, str)]
            found = found or re.findall(r"[^\n?]*\?", reply)  # a chatty model's plain list
            found = list(dict.fromkeys(q.strip(" -*0123456789.\t") for q in found if q.strip()))[:6]
            if not found:
                raise LLMError(f"The model '{self.llm.model}' wrote no questions for the text: {reply[:200]!r}",
                               "Try again or use a larger model; small models may ignore the JSON format.")
            self.questions[text] = found
        return self.questions[text]

    def score_one(self, text: str, image, detail: dict) -> float:
        answers = {q: parse_yes_no(self.llm.ask_yes_no(image, q)[0]) for q in self.questions_for(text)}
        detail["answers"] = answers
        detail["missing"] = [q for q, answer in answers.items() if answer == "no"]
        known = [answer for answer in answers.values() if answer is not None]
        if not known:
            detail["reason"] = "no answer was a clear yes or no"
            return math.nan
        return known.count("yes") / len(known)


def question_rater(llm: LLM) -> Rater:
    """Question checks (TIFA/DSG style): the LLM writes 3-6 yes/no questions the text implies, the vision model
    answers each for each image; the score is the share of clear "yes". ``details[i]["missing"]``: the
    questions answered "no".

    >>> question_rater(LLM()).score("a red fox asleep in snow", gen.images)   # doctest: +SKIP
    """
    return QuestionRater(llm)


class VqaRater(Rater):
    def score_one(self, text: str, image, detail: dict) -> float:
        answer, p_yes = self.llm.ask_yes_no(image, f'Does this figure show "{text}"?')
        detail["answer"] = answer
        if p_yes is None and parse_yes_no(answer) is None:  # chatty: no yes/no token to read
            detail["reason"] = "the answer did not start with yes or no"
            return math.nan
        if p_yes is None:
            raise LLMError(f"The server at {self.llm.base_url} sent no log-probabilities, so there is no "
                           'P("yes") to score with.', "Use a server that sends them (Ollama >= 0.12.11, "
                           "llama-server, vLLM, OpenAI; LM Studio does not), or question_rater(llm).")
        return p_yes


def vqa_rater(llm: LLM) -> Rater:
    """VQAScore: P("yes") to 'Does this figure show "<text>"? Please answer yes or no.' from the server's
    log-probabilities (LLMError where it sends none).

    >>> vqa_rater(LLM(vision_model="qwen2.5vl:3b")).score("a red fox", gen.images)   # doctest: +SKIP
    """
    return VqaRater("vqa", llm=llm)


def as_rater(fn, name: str) -> Rater:
    """Your own rater from ``fn(text, image) -> float`` (higher is better).

    >>> as_rater(lambda text, image: image.width / 1000, "width").score("any", [gen.image])   # doctest: +SKIP
    [0.512]
    """
    if not callable(fn):
        raise KitError(f"as_rater needs a function fn(text, image) -> float, not {type(fn).__name__}.",
                       "Pass the function itself, without calling it: as_rater(my_score, 'mine').")
    return Rater(name, fn)


def calibrate_threshold(rater, pairs, *, save: bool = True) -> dict:
    """The threshold that best tells good from bad ``pairs`` (text, image or path, good) for ``rater``, stored by
    its name in <OUTPUT_DIR>/thresholds.json (a threshold holds for one model only): the highest of those with the
    best balanced accuracy (mean of the shares of good pairs accepted, score >= threshold, and bad ones rejected),
    halfway between two scores. Pairs scored NaN are dropped. ``calibrate_threshold(clip_rater(), pairs)``
    """
    by_text: dict[str, list] = {}
    for text, image, good in pairs:
        by_text.setdefault(text, []).append((image, bool(good)))
    kept = []
    for text, items in by_text.items():  # one call per text: a CLIP rater scores its images in one batch
        scores = rater.score(text, [image for image, _ in items])
        kept += [(float(s), good) for s, (_, good) in zip(scores, items) if math.isfinite(float(s))]
    good, bad, values = [s for s, g in kept if g], [s for s, g in kept if not g], sorted({s for s, _ in kept})
    if min(len(good), len(bad), len(values)) < 2:
        raise KitError(f"Calibrating {rater.name} needs 2 good and 2 bad pairs with different scores; it got "
                       f"{len(good)} good and {len(bad)} bad with a score, {len(values)} distinct score(s).",
                       "Label more pairs by eye: texts with their own images (good=True) and with others' (False).")

    def balanced(cut: float) -> float:
        return (sum(s >= cut for s in good) / len(good) + sum(s < cut for s in bad) / len(bad)) / 2
    cut = max(reversed([(a + b) / 2 for a, b in zip(values, values[1:])]), key=balanced)
    record = {"rater": rater.name, "threshold": cut, "pairs": len(kept), "good": len(good), "bad": len(bad),
              "dropped": sum(map(len, by_text.values())) - len(kept), "balanced_accuracy": round(balanced(cut), 4),
              "false_accepts": sum(s >= cut for s in bad), "false_rejects": sum(s < cut for s in good),
              "meaningful": getattr(rater, "meaningful", True), "date": datetime.now().date().isoformat()}
    if save:
        path = load_settings().output_dir / THRESHOLDS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({**_stored(path, move_damaged=True), rater.name: record}, indent=1).encode())
    return record


def stored_threshold(rater) -> dict | None:
    """calibrate_threshold's record for ``rater`` (or its name), or None: ``stored_threshold(clip_rater())``."""
    record = _stored(load_settings().output_dir / THRESHOLDS_FILE).get(getattr(rater, "name", rater))
    return record if isinstance(record, dict) and isinstance(record.get("threshold"), (int, float)) else None


def _stored(path: Path, move_damaged: bool = False) -> dict:
    """The thresholds file; one that is not a JSON object (edited by hand) is said, and before a save kept aside."""
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:  # not UTF-8 or not JSON
        data = None
    if not isinstance(data, dict):
        aside = path.rename(f"{path}.damaged-{datetime.now():%Y%m%d-%H%M%S}") if move_damaged else None
        warnings.warn(f"{path} is not a JSON object of thresholds: {f'moved to {aside}' if aside else 'ignored'}")
    return data if isinstance(data, dict) else {}
