"""Image prompts: written by an LLM, or built by rules (the baseline), always within CLIP's 75 tokens.

CLIP's text encoder sees 77 tokens: a start marker, 75 usable ones and an end marker. Words past that are
cut (diffusers, CLIP scoring) or moved to a second chunk (A1111), so the kit counts with CLIP's own tokenizer.
"""

from __future__ import annotations

import bisect
import json
import re
import unicodedata
import warnings
from dataclasses import dataclass
from functools import lru_cache

from .text import STOP_WORDS, load_system_prompt, tokenize

CLIP_TOKEN_LIMIT = 75  # 77 positions minus the start and end markers
# Text past this many characters per allowed token is over the limit anyway; it is cut before counting
# (one very long run of letters takes CLIP's tokenizer minutes).
MAX_CHARS_PER_TOKEN = 16
MAX_PROMPT_CHARS = 1000  # of an LLM's prompt; a 75-token prompt is a few hundred characters
DEFAULT_NEGATIVE = "blurry, lowres, jpeg artifacts, watermark, text, deformed, oversaturated"

# JSON Schema for the LLM's answer; servers that support structured output hold the model to it.
PROMPT_SCHEMA = {"type": "object", "required": ["prompt", "negative_prompt"], "additionalProperties": False,
                 "properties": {"prompt": {"type": "string", "maxLength": 400},
                                "negative_prompt": {"type": "string", "maxLength": 200}}}


@dataclass
class ImagePrompt:
    """A prompt pair for txt2img, its ``source`` ("llm" or "baseline"), its CLIP token count and a ``note`` on
    what was fixed on the way (a retry, a trim, a model that ignored the JSON format)."""

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


def valid_unicode(text: str) -> str:
    """``text`` with each lone surrogate (half a UTF-16 pair: no file or server takes it) as U+FFFD.

    >>> valid_unicode("\\ud83d lighthouse") == "\\ufffd lighthouse", valid_unicode("\\ud83d\\udd25")
    (True, '🔥')
    """
    return str(text).encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_text(text: str) -> str:
    """Untrusted text made safe to send and store: valid Unicode, no control characters, single spaces.

    >>> clean_text("red fox\\x00 in\\n snow ")
    'red fox in snow'
    """
    text = valid_unicode(text)
    return " ".join("".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text).split())


@lru_cache(maxsize=1)
def _tokenizer():  # open_clip imports torch (seconds), so only when tokens are counted
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer()


def count_clip_tokens(text: str) -> int:
    """Count CLIP's tokens of ``text``, without the start and end markers (a comma is a token).

    >>> count_clip_tokens("a red fox, watercolor")
    5
    """
    return len(_tokenizer().encode(text))


def split_phrases(prompt: str) -> list[str]:
    """Split a prompt at its commas, except inside A1111's brackets such as ``(red fox, snow:1.2)``."""
    phrases, start, depth = [], 0, 0
    for index, char in enumerate(prompt):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            phrases.append(prompt[start:index])
            start = index + 1
    phrases.append(prompt[start:])
    return [p.strip() for p in phrases if p.strip()]


def trim_to_tokens(prompt: str, limit: int = CLIP_TOKEN_LIMIT) -> tuple[str, str]:
    """Cut ``prompt`` at the last comma that keeps it within ``limit`` tokens; returns (kept, cut).

    A weighted group in brackets stays whole; a first phrase too long is cut by words, a first word by
    characters (never between a letter and its accent). A1111's syntax counts too: it errs on the safe side.

    >>> trim_to_tokens("red fox, snow, winter sun", limit=4)
    ('red fox, snow', 'winter sun')
    """
    if limit < 1:
        raise ValueError(f"limit={limit} must be at least 1 token")
    head = prompt[: MAX_CHARS_PER_TOKEN * limit]  # the rest is past the limit anyway
    if head == prompt and count_clip_tokens(prompt) <= limit:
        return prompt, ""
    prompt, head = prompt.lstrip(), head.lstrip()
    phrases = split_phrases(head)
    kept: list[str] = []
    for phrase in phrases:
        if count_clip_tokens(", ".join(kept + [phrase])) > limit:
            break
        kept.append(phrase)
    if not kept and phrases:  # one long first phrase: cut by words, then inside the first word
        kept = [_cut_phrase(phrases[0], limit)]
    text = ", ".join(kept)
    if prompt.startswith(text):
        cut = prompt[len(text):].lstrip(" ,")
    else:
        cut = ", ".join(phrases[len(kept):]) + prompt[len(head):]
    return text, cut


def _cut_phrase(phrase: str, limit: int) -> str:
    """The longest start of one phrase within ``limit`` tokens: whole words, else part of the first."""
    words = phrase.split()
    count = _longest_start(len(words), lambda n: count_clip_tokens(" ".join(words[:n])) <= limit)
    if count:
        return " ".join(words[:count])
    word = words[0]
    end = _longest_start(len(word), lambda n: count_clip_tokens(word[:n]) <= limit)
    # Step back so a letter keeps its accents and an emoji sequence stays whole.
    safe = end
    while safe > 0 and (_joins_previous(word[safe]) or word[safe - 1] == "\u200d"):
        safe -= 1
    return word[: safe or end]


def _longest_start(size: int, fits) -> int:
    """The largest n in 0..size with fits(n), by bisection (counts grow with n; fits(0) holds)."""
    return bisect.bisect_left(range(size + 1), True, key=lambda n: not fits(n)) - 1


def _joins_previous(char: str) -> bool:
    """True for an accent, an emoji joiner or variation selector, or a skin-tone modifier."""
    return (unicodedata.category(char) in ("Mn", "Mc", "Me") or char in "\u200d\ufe0e\ufe0f"
            or 0x1F3FB <= ord(char) <= 0x1F3FF)


def fit_prompt(prompt: ImagePrompt, limit: int) -> ImagePrompt:
    """The prompt trimmed to ``limit`` CLIP tokens (warning with what was cut), its token count set."""
    head = prompt.prompt[: MAX_CHARS_PER_TOKEN * limit]
    before = count_clip_tokens(head)  # of a very long prompt, a count of its start is enough
    if before > limit or head != prompt.prompt:
        prompt.prompt, cut = trim_to_tokens(prompt.prompt, limit)
        over = f"{before}" if head == prompt.prompt else f"more than {before}"
        message = f"The prompt had {over} CLIP tokens (limit {limit}); cut: {_shorten(cut, 200)!r}"
        prompt.note = "; ".join(filter(None, [prompt.note, message]))
        warnings.warn(message, stacklevel=3)
    prompt.tokens = count_clip_tokens(prompt.prompt)
    return prompt


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[:length] + f"... ({len(text)} characters)"


def parse_prompt_reply(reply: str) -> tuple[str, str, str]:
    """(prompt, negative_prompt, note) from an LLM reply: JSON if possible, else plain text. Only the FIRST
    JSON object counts (a later one smuggled in by a document never becomes the prompt); no prompt gives "".

    >>> parse_prompt_reply('{"prompt": "oil painting, fox", "negative_prompt": "blurry"}')
    ('oil painting, fox', 'blurry', '')
    """
    reply = str(reply)
    objects = _json_objects(reply, most=2)
    notes = []
    if objects:
        if len(objects) > 1:
            notes.append("the reply held several JSON objects; only the first was read")
        value = objects[0].get("prompt")
        prompt = clean_text(value) if isinstance(value, str) else ""
        if not prompt:
            notes.append(f"the JSON answer had no usable prompt (prompt: {_shorten(repr(value), 60)})")
        negative = objects[0].get("negative_prompt")
        negative = clean_text(negative) if isinstance(negative, str) else ""
    else:
        prompt, negative = _plain_text_prompt(reply), ""
        notes.append("the model did not answer in JSON; its plain text was used as the prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        notes.append(f"the prompt had {len(prompt)} characters; only the first {MAX_PROMPT_CHARS} were read")
        prompt = prompt[:MAX_PROMPT_CHARS]
    return prompt, negative or DEFAULT_NEGATIVE, "; ".join(notes)


def _json_objects(reply: str, most: int) -> list[dict]:
    """Up to ``most`` JSON objects found in ``reply``, in order (each ``{`` is tried as a start)."""
    decoder = json.JSONDecoder(strict=False)  # strict=False: a raw newline inside a string is fine
    found, position, tries = [], reply.find("{"), 0
    while position != -1 and len(found) < most and tries < 50:  # a bounded search, whatever the reply
        tries += 1
        try:
            data, end = decoder.raw_decode(reply, position)
        except ValueError:
            position = reply.find("{", position + 1)
            continue
        if isinstance(data, dict):
            found.append(data)
        position = reply.find("{", end)
    return found


def _plain_text_prompt(reply: str) -> str:
    """The prompt of a reply that is not JSON, dropping a chatty lead-in like "Sure! Here is a prompt:"."""
    broken = re.search(r'"prompt"\s*:\s*"((?:[^"\\]|\\.)*)', reply)
    if broken:  # JSON cut off (e.g. at max_tokens): its prompt value, never the JSON around it
        try:
            return clean_text(json.loads(f'"{broken.group(1)}"', strict=False))
        except ValueError:
            return clean_text(broken.group(1))
    text = reply.strip().strip("`").strip()
    first, _, rest = text.partition("\n")
    if rest.strip() and first.rstrip().endswith(":"):
        text = rest.strip()
    elif ":" in first and len(first.split(":", 1)[0].split()) <= 8:
        text = (first.split(":", 1)[1] + ("\n" + rest if rest else "")).strip()
    return clean_text(text).strip('"').strip()


def write_image_prompt(text, llm=None, *, temperature: float = 0.4, limit: int = CLIP_TOKEN_LIMIT,
                       system: str | None = None) -> ImagePrompt:
    """Have an LLM turn a text into an image prompt and negative prompt (within ``limit`` CLIP tokens).

    A prompt over the limit, or an answer without one, is asked for once more; then a prompt still too long
    is cut (with a warning), and no prompt raises LLMError (the pipeline then uses the baseline).

    >>> write_image_prompt("A white lighthouse stands against a storm ...").prompt   # doctest: +SKIP
    'oil painting, white lighthouse on black rocks, storm waves, spray, dramatic light, wide angle'
    """
    from .llm import LLM, LLMError
    llm = llm or LLM()
    source_text = str(text).strip()
    if not source_text:
        raise ValueError("write_image_prompt needs a text; get one with helpers.text.get_text(keywords).")
    messages = [{"role": "user", "content": f"Text:\n{source_text}"}]
    options = {"system": system or load_system_prompt("image_prompt_system"), "temperature": temperature,
               "max_tokens": 400, "json_schema": PROMPT_SCHEMA, "schema_name": "image_prompt"}
    reply = llm.chat(messages, **options)
    prompt, negative, note = parse_prompt_reply(reply)
    tokens = count_clip_tokens(prompt[: MAX_CHARS_PER_TOKEN * limit])
    if not prompt or tokens > limit:  # ask once more, saying what was wrong
        problem = (f"That prompt has {tokens} CLIP tokens; the limit is {limit}. Shorten it: keep the most "
                   "important phrases first." if prompt else "That answer had no prompt.")
        messages += [{"role": "assistant", "content": _shorten(reply, 2 * MAX_PROMPT_CHARS)},
                     {"role": "user", "content": f"{problem} Same JSON format, with a non-empty prompt."}]
        first = f"the first prompt had {tokens} tokens" if prompt else "the first answer had no prompt"
        prompt, negative, second_note = parse_prompt_reply(llm.chat(messages, **options))
        note = "; ".join(filter(None, [note or second_note, f"asked again: {first}"]))
    if not prompt:
        raise LLMError(f"The LLM answered twice without a usable image prompt ({note}).",
                       fix="Try another model (LLM_MODEL), or use baseline_prompt(text); the pipeline "
                           "uses the baseline by itself.")
    return fit_prompt(ImagePrompt(prompt, negative, "llm", note=note), limit)


# Words that carry colour, light or weather: worth keeping in a picture description.
VISUAL_WORDS = frozenset("""
red orange yellow green blue purple violet pink white black grey gray brown golden silver amber crimson
scarlet turquoise teal copper bronze ivory pale dark bright glowing shining misty foggy rainy snowy stormy
sunny cloudy frozen icy wet dusty shadow shadows sunset sunrise dawn dusk twilight night moonlight sunlight
lantern candle fog mist rain snow storm clouds
""".split())


def _phrases(text: str) -> list[str]:
    """Runs of up to 3 content words between stop words and punctuation, in text order."""
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
    """Build a prompt by rules, without any model: the keywords (else the text's first phrase), then phrases
    of the text (those with colour, light or weather words first), in a template.

    >>> baseline_prompt("Grey waves crash on black rocks below a white lighthouse.").prompt
    'digital painting of grey waves crash, black rocks, white lighthouse, highly detailed, soft natural light'
    """
    phrases = _phrases(str(text))
    if isinstance(keywords, (list, tuple)):
        keywords = ", ".join(keywords)
    # A text in a script whose words the rules cannot pick (Chinese, Arabic ...) gets its first sentence.
    first_sentence = re.split(r"[.!?。！？\n]", clean_text(text).strip() + ".")[0][:60].strip()
    subject = ([k for k in (clean_text(k) for k in clean_text(keywords or "").split(",")) if k]
               or phrases[:1] or [first_sentence or "a picture"])
    used = {term for phrase in subject for term in tokenize(phrase)}
    details = []
    for phrase in phrases:  # each word used once
        terms = set(tokenize(phrase))
        if terms and not terms <= used:
            details.append(phrase)
            used |= terms
    details.sort(key=lambda p: 0 if VISUAL_WORDS & set(p.split()) else 1)  # they change a picture most
    parts = [f"digital painting of {', '.join(subject)}"] + details[:10] + ["highly detailed, soft natural light"]
    return fit_prompt(ImagePrompt(", ".join(parts), DEFAULT_NEGATIVE, "baseline"), limit)
