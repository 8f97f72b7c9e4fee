"""Getting a text from a few keywords: by an LLM, by retrieval from the kit's corpus, or both (RAG).

Retrieval ranks the texts in ``data/corpus/`` with BM25: words rare in the collection but frequent in a text
count most. :func:`get_text` picks the route; :class:`Text` records which one."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .config import KIT_ROOT
from .errors import KitError

CORPUS_DIR = KIT_ROOT / "data" / "corpus"
PROMPTS_DIR = KIT_ROOT / "data" / "prompts"
SOURCES = ("auto", "llm", "corpus", "rag")

# Words too common to say anything about a text (hand-made: nltk's lists need a separate download).
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers him his how i if in into is it its itself just me more most my no nor not now
of off on once only or other our out over own same she should so some such than that the their them
then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your
""".split())


class TextError(KitError, ValueError):
    """Getting a text failed; the message names the cause and the fix."""


def tokenize(text: str) -> list[str]:
    """Split text into search terms: lower case, no accents or stop words, plural -s cut (crude: no stemmer).

    >>> tokenize("Café terraces in Zürich, the waves!")
    ['cafe', 'terrace', 'zurich', 'wave']
    """
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    terms = []
    for word in re.findall(r"[a-z0-9]+", folded):
        if word in STOP_WORDS or len(word) < 2:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        terms.append(word)
    return terms


@dataclass(frozen=True)
class Document:
    """One text of the corpus."""

    slug: str
    title: str
    topic: str
    keywords: tuple[str, ...]
    text: str


def parse_document(path: Path) -> Document:
    """Read one corpus file (``# Title``, ``Topic:``, ``Keywords:``, a blank line, the paragraph)."""
    head, *body = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"), maxsplit=1)
    header = {}
    for line in head.splitlines():
        if line.startswith("# "):
            header["title"] = line[2:].strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            header[key.strip().lower()] = value.strip()
    text = " ".join(line.strip() for line in "".join(body).splitlines() if line.strip())
    if "title" not in header or not text:
        raise TextError(f"{path} is not a corpus text: it needs a '# Title' line, a blank line and a paragraph "
                        "(see data/corpus/README.md).")
    keywords = tuple(k.strip() for k in header.get("keywords", "").split(",") if k.strip())
    return Document(path.stem, header["title"], header.get("topic", ""), keywords, text)


@lru_cache(maxsize=4)
def load_corpus(folder: str | Path = CORPUS_DIR) -> tuple[Document, ...]:
    """All texts of a corpus folder (every ``*.md`` except README.md), sorted by file name."""
    paths = sorted(p for p in Path(folder).glob("*.md") if p.name.lower() != "readme.md")
    if not paths:
        raise TextError(f"No texts found in {folder}. Each text is a .md file; see data/corpus/README.md.")
    return tuple(parse_document(p) for p in paths)


@dataclass(frozen=True)
class Hit:
    """A retrieved document and its BM25 score (higher is better; 0 means no query word matched)."""

    document: Document
    score: float

    @property
    def title(self) -> str:
        return self.document.title

    @property
    def text(self) -> str:
        return self.document.text


class Retriever:
    """A BM25 index over a corpus, built once (a few milliseconds for 80 texts)."""

    def __init__(self, documents: tuple[Document, ...] | None = None):
        from rank_bm25 import BM25Okapi
        self.documents = documents if documents is not None else load_corpus()
        self._index = BM25Okapi([tokenize(f"{d.title} {' '.join(d.keywords)} {d.text}") for d in self.documents])

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The ``k`` best documents with a score above 0, best first; ties keep corpus order."""
        terms = tokenize(query)
        if not terms:
            return []
        scores = self._index.get_scores(terms)
        ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return [Hit(self.documents[i], float(scores[i])) for i in ranked[:k] if scores[i] > 0]


@lru_cache(maxsize=1)
def _default_retriever() -> Retriever:
    return Retriever()


def keywords_to_query(keywords: str | list[str] | tuple[str, ...]) -> str:
    """Accept ``"owl, forest"`` or ``["owl", "forest"]``; refuse empty input with a clear error."""
    if isinstance(keywords, (list, tuple)):
        keywords = ", ".join(str(k) for k in keywords)
    if not isinstance(keywords, str) or not keywords.strip():
        raise TextError("No keywords given. Pass a few words such as 'lighthouse, storm' or ['owl', 'forest'].")
    return keywords.strip()


def retrieve_text(keywords: str | list[str], k: int = 3) -> list[Hit]:
    """Find the ``k`` corpus texts that best match the keywords (may be fewer, or none).

    >>> [hit.title for hit in retrieve_text(["harbour", "cranes", "night"], k=2)]
    ['Container Harbour at Night', 'Fishing Harbour at Low Tide']
    """
    return _default_retriever().search(keywords_to_query(keywords), k=k)


@dataclass
class Text:
    """A text (``str(text)``), its ``source`` ("llm", "corpus" or "rag") and a ``note`` on any fallback."""

    text: str
    source: str
    keywords: str
    title: str | None = None
    model: str | None = None
    hits: list[Hit] = field(default_factory=list, repr=False)
    note: str = ""

    def __str__(self) -> str:
        return self.text

    def describe(self) -> str:
        """One line saying where the text came from, for notebooks and run records."""
        if self.source == "corpus":
            origin = f"retrieved from the kit's corpus: '{self.title}' (BM25 score {self.hits[0].score:.2f})"
        elif self.source == "rag":
            origin = f"written by {self.model} from {len(self.hits)} retrieved text(s)"
        else:
            origin = f"written by {self.model}"
        return f"{origin}{'; ' + self.note if self.note else ''}"


def load_system_prompt(name: str) -> str:
    """The text of ``data/prompts/<name>.md`` (the kit's system prompts; edit them freely)."""
    return (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()


def _corpus_text(query: str, note: str = "") -> Text:
    hits = retrieve_text(query, k=3)
    if not hits:
        topics = sorted({d.topic for d in load_corpus()})
        raise TextError(f"No text in the corpus matches {query!r}. Try other keywords (the corpus covers: "
                        f"{', '.join(topics)}), or let an LLM write the text: get_text(..., source='llm').")
    return Text(hits[0].text, "corpus", query, title=hits[0].title, hits=hits, note=note)


def _llm_text(query: str, llm, *, temperature: float = 0.8, max_tokens: int = 300, stream: bool = False,
              system: str | None = None) -> Text:
    """The LLM writes a short scene description from the keywords."""
    reply = llm.chat(f"Keywords: {query}", system=system or load_system_prompt("text_system"),
                     temperature=temperature, max_tokens=max_tokens, stream=stream)
    return Text(reply.strip(), "llm", query, model=llm.model)


def _rag_text(query: str, llm, *, k: int = 3, temperature: float = 0.7, max_tokens: int = 300,
              stream: bool = False) -> Text:
    """Retrieve ``k`` texts, then the LLM writes one new text grounded in them (RAG)."""
    hits = retrieve_text(query, k=k)
    if not hits:
        text = _llm_text(query, llm, temperature=temperature, max_tokens=max_tokens, stream=stream)
        text.note = "no corpus text matched, so the LLM wrote the text without sources"
        return text
    sources = "\n\n".join(f"[{i}] {hit.title}\n{hit.text}" for i, hit in enumerate(hits, start=1))
    reply = llm.chat(f"Keywords: {query}\n\nSource texts:\n\n{sources}", system=load_system_prompt("rag_system"),
                     temperature=temperature, max_tokens=max_tokens, stream=stream)
    return Text(reply.strip(), "rag", query, title=hits[0].title, model=llm.model, hits=hits)


def get_text(keywords: str | list[str], source: str = "auto", llm=None, **options) -> Text:
    """Get a text for the keywords from ``source``: "llm" (a chat model writes it), "corpus" (retrieval),
    "rag" (retrieval, then the LLM writes a text grounded in what was found) or "auto" (the LLM when one
    answers, else retrieval, saying so in ``.note``). Options (temperature, max_tokens, stream) go to the LLM.

    >>> t = get_text("northern lights", source="corpus")
    >>> t.source, t.title
    ('corpus', 'Why the Northern Lights Glow')
    """
    if source not in SOURCES:
        raise TextError(f"source={source!r} is not one of {', '.join(SOURCES)}.")
    query = keywords_to_query(keywords)
    if source == "corpus":
        return _corpus_text(query)
    from .llm import LLM
    llm = llm or LLM()
    if source == "auto" and not llm.available():
        return _corpus_text(query, note=f"no LLM answered at {llm.base_url}, so the text was retrieved")
    return _rag_text(query, llm, **options) if source == "rag" else _llm_text(query, llm, **options)
