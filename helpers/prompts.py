"""Image prompts: written by an LLM, or built by rules (the baseline), always within CLIP's 75 tokens.

Stable Diffusion reads a prompt through CLIP's text encoder, which sees 77 tokens: a start marker,
75 usable tokens and an end marker. Words past that are cut (diffusers, CLIP scoring) or moved to
a second chunk (A1111). So the kit keeps prompts within 75 tokens, counted with CLIP's own
tokenizer, which open_clip ships.

Example:
    >>> from helpers.prompts import baseline_prompt, count_clip_tokens
    >>> count_clip_tokens("a red fox, watercolor")
    5
    >>> p = baseline_prompt("A red fox sleeps in the snow under a pale winter sun.", keywords="fox, snow")
    >>> p.source, p.prompt.startswith("digital painting of fox, snow")
    ('baseline', True)
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache

from .text import STOP_WORDS, load_system_prompt

CLIP_TOKEN_LIMIT = 75  # 77 positions minus the start and end markers
DEFAULT_NEGATIVE = "blurry, lowres, jpeg artifacts, watermark, text, deformed, oversaturated"

# JSON Schema for the LLM's answer; servers that support structured output hold the model to it.
PROMPT_SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "maxLength": 400},
        "negative_prompt": {"type": "string", "maxLength": 200},
    },
    "required": ["prompt", "negative_prompt"],
    "additionalProperties": False,
}


@dataclass
class ImagePrompt:
    """A prompt pair for txt2img and where it came from (``source`` "llm" or "baseline").

    ``tokens`` is the prompt's CLIP token count; ``note`` says what was fixed on the way
    (a retry, a trim, a model that ignored the JSON format).
    """

    prompt: str
    negative_prompt: str
    source: str
    tokens: int = 0
    note: str = ""

    def fields(self) -> dict[str, str]:
        """The txt2img fields: ``client.txt2img(**image_prompt.fields())``."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt}

    def __str__(self) -> str:
        return self.prompt


@lru_cache(maxsize=1)
def _tokenizer():
    # open_clip imports torch, which takes seconds, so this happens only when tokens are counted.
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def count_clip_tokens(text: str) -> int:
    """Count the tokens CLIP's tokenizer makes of ``text``, without the start and end markers.

    A comma is a token, and long or rare words take several.

    >>> count_clip_tokens("a lone lighthouse on a rocky cliff at dusk, storm clouds, crashing waves, "
    ...                   "oil painting, dramatic rim lighting, wide angle, highly detailed")
    28
    """
    return len(_tokenizer().encode(text))


def split_phrases(prompt: str) -> list[str]:
    """Split a prompt at its commas, except inside A1111's brackets such as ``(red fox, snow:1.2)``.

    >>> split_phrases("(red fox, snow:1.2), winter sun")
    ['(red fox, snow:1.2)', 'winter sun']
    """
    phrases, current, depth = [], [], 0
    for char in prompt:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        if char == "," and depth == 0:
            phrases.append("".join(current))
            current = []
        else:
            current.append(char)
    phrases.append("".join(current))
    return [p.strip() for p in phrases if p.strip()]


def trim_to_tokens(prompt: str, limit: int = CLIP_TOKEN_LIMIT) -> tuple[str, str]:
    """Cut ``prompt`` at the last comma that keeps it within ``limit`` tokens; returns (kept, cut).

    Commas inside A1111's brackets do not count, so a weighted group stays whole. When even the
    first phrase is too long, it is cut word by word. Note the count includes A1111's syntax
    characters (brackets, ``:1.2``), which A1111 itself does not feed to CLIP: the count errs on
    the safe side.

    >>> trim_to_tokens("red fox, snow, winter sun", limit=4)
    ('red fox, snow', 'winter sun')
    """
    if count_clip_tokens(prompt) <= limit:
        return prompt, ""
    phrases = split_phrases(prompt)
    kept: list[str] = []
    for phrase in phrases:
        if count_clip_tokens(", ".join(kept + [phrase])) > limit:
            break
        kept.append(phrase)
    if not kept:  # one long phrase without commas: cut by words
        words = phrases[0].split()
        while words and count_clip_tokens(" ".join(words)) > limit:
            words.pop()
        kept = [" ".join(words)]
    text = ", ".join(kept)
    cut = prompt[len(text):].lstrip(" ,") if prompt.startswith(text) else ", ".join(phrases[len(kept):])
    return text, cut


def _fit(prompt: ImagePrompt, limit: int) -> ImagePrompt:
    """Trim a prompt over the limit, warning with what was cut."""
    prompt.tokens = count_clip_tokens(prompt.prompt)
    if prompt.tokens > limit:
        before = prompt.tokens
        prompt.prompt, cut = trim_to_tokens(prompt.prompt, limit)
        prompt.tokens = count_clip_tokens(prompt.prompt)
        message = f"The prompt had {before} CLIP tokens (limit {limit}); cut: {cut!r}"
        prompt.note = "; ".join(filter(None, [prompt.note, message]))
        warnings.warn(message, stacklevel=3)
    return prompt


def _parse_reply(reply: str) -> tuple[str, str, str]:
    """(prompt, negative_prompt, note) from an LLM reply: JSON if possible, else plain text."""
    candidates = [reply]
    found = re.search(r"\{.*\}", reply, flags=re.S)  # JSON wrapped in prose or a ``` block
    if found:
        candidates.append(found.group(0))
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("prompt"), str) and data["prompt"].strip():
            negative = data.get("negative_prompt")
            return data["prompt"].strip(), (negative if isinstance(negative, str) else DEFAULT_NEGATIVE).strip(), ""
    # A small model ignored the schema: keep its text, dropping a chatty lead-in like "Sure! Here is a prompt:".
    text = reply.strip().strip("`").strip()
    first, _, rest = text.partition("\n")
    if rest.strip() and first.rstrip().endswith(":"):
        text = rest.strip()
    elif ":" in first and len(first.split(":", 1)[0].split()) <= 8:
        text = (first.split(":", 1)[1] + ("\n" + rest if rest else "")).strip()
    text = " ".join(text.split()).strip('"')
    return text, DEFAULT_NEGATIVE, "the model did not answer in JSON; its plain text was used as the prompt"


def write_image_prompt(text, llm=None, *, temperature: float = 0.4, limit: int = CLIP_TOKEN_LIMIT,
                       system: str | None = None) -> ImagePrompt:
    """Have an LLM turn a text into an image prompt and negative prompt (within ``limit`` CLIP tokens).

    The LLM is asked for JSON ``{"prompt", "negative_prompt"}``; a reply that is not JSON is used as
    plain text. A prompt over the limit is sent back once with its token count; if it is still too
    long it is cut at the last comma that fits, with a warning saying what was cut.

    >>> ip = write_image_prompt("A white lighthouse stands against a storm ...")   # doctest: +SKIP
    >>> ip.prompt                                                                 # doctest: +SKIP
    'oil painting, white lighthouse on black rocks, storm waves, spray, dramatic light, wide angle'
    """
    from .llm import LLM

    llm = llm or LLM()
    source_text = str(text).strip()
    if not source_text:
        raise ValueError("write_image_prompt needs a text; get one with helpers.text.get_text(keywords).")
    messages = [{"role": "user", "content": f"Text:\n{source_text}"}]
    system = system or load_system_prompt("image_prompt_system")
    reply = llm.chat(messages, system=system, temperature=temperature, max_tokens=400, json_schema=PROMPT_SCHEMA,
                     schema_name="image_prompt")
    prompt, negative, note = _parse_reply(reply)
    tokens = count_clip_tokens(prompt)
    if tokens > limit:  # ask once more, telling the model how long it was
        messages += [{"role": "assistant", "content": reply},
                     {"role": "user", "content": f"That prompt has {tokens} CLIP tokens; the limit is {limit}. "
                                                 "Shorten it: keep the most important phrases first. Same JSON format."}]
        reply = llm.chat(messages, system=system, temperature=temperature, max_tokens=400,
                         json_schema=PROMPT_SCHEMA, schema_name="image_prompt")
        prompt, negative, second_note = _parse_reply(reply)
        note = "; ".join(filter(None, [note or second_note, f"asked again: the first prompt had {tokens} tokens"]))
    return _fit(ImagePrompt(prompt, negative, "llm", note=note), limit)


# Words that carry colour, light or weather: worth keeping in a picture description.
VISUAL_WORDS = frozenset("""
red orange yellow green blue purple violet pink white black grey gray brown golden silver amber crimson
scarlet turquoise teal copper bronze ivory pale dark bright glowing shining misty foggy rainy snowy stormy
sunny cloudy frozen icy wet dusty shadow shadows sunset sunrise dawn dusk twilight night moonlight sunlight
lantern candle fog mist rain snow storm clouds
""".split())
_STYLE = "digital painting"
_FINISH = "highly detailed, soft natural light"


def _phrases(text: str) -> list[str]:
    """Runs of up to 3 content words between stop words and punctuation, in text order.

    >>> _phrases("A white lighthouse stands on a rocky point, warning ships away.")
    ['white lighthouse stands', 'rocky point', 'warning ships away']
    """
    phrases = []
    for chunk in re.split(r"[.,;:!?()\n]+", text):
        run: list[str] = []
        for word in re.findall(r"[A-Za-zÀ-ÿ'-]+", chunk) + [""]:
            lower = word.lower()
            if word and lower not in STOP_WORDS and len(lower) > 2 and not lower.endswith("ly"):
                run.append(lower)
                continue
            if run:
                phrases.append(" ".join(run[-3:]))  # English noun phrases end in their noun
            run = []
    return phrases


def baseline_prompt(text, keywords: str | list[str] | None = None, *, limit: int = CLIP_TOKEN_LIMIT) -> ImagePrompt:
    """Build a prompt by rules, without any model: keywords, then phrases of the text, in a template.

    The lesson compares LLM prompts against this baseline, and the pipeline uses it when no LLM
    answers. Subject = the keywords (or the text's first phrase); details = short phrases of the
    text, those with colour, light or weather words first, each word used once.

    >>> baseline_prompt("Grey waves crash on black rocks below a white lighthouse.").prompt
    'digital painting of grey waves crash, black rocks, white lighthouse, highly detailed, soft natural light'
    """
    from .text import tokenize

    phrases = _phrases(str(text))
    if isinstance(keywords, (list, tuple)):
        keywords = ", ".join(keywords)
    subject = [k.strip() for k in (keywords or "").split(",") if k.strip()] or phrases[:1]
    used = {term for phrase in subject for term in tokenize(phrase)}
    details = []
    for phrase in phrases:
        terms = set(tokenize(phrase))
        if terms and not terms <= used:
            details.append(phrase)
            used |= terms
    # Phrases with colour, light or weather words first: they change a picture most.
    details.sort(key=lambda p: 0 if VISUAL_WORDS & set(p.split()) else 1)
    parts = [f"{_STYLE} of {', '.join(subject)}"] + details[:10] + [_FINISH]
    return _fit(ImagePrompt(", ".join(parts), DEFAULT_NEGATIVE, "baseline"), limit)
