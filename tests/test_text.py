"""Getting a text: corpus retrieval, LLM generation, RAG and the "auto" fallback."""

from __future__ import annotations

import socket
import time

import pytest

from helpers.llm import LLM
from helpers.text import (
    CORPUS_DIR,
    Retriever,
    TextError,
    get_text,
    load_corpus,
    parse_document,
    retrieve_text,
    tokenize,
)


def test_corpus_has_60_to_100_titled_texts():
    docs = load_corpus()
    assert 60 <= len(docs) <= 100
    assert len({d.title for d in docs}) == len(docs)
    assert all(d.title and 40 <= len(d.text.split()) <= 150 and d.keywords for d in docs)
    assert len({d.topic for d in docs}) >= 7


def test_every_text_is_found_by_its_own_keywords():
    retriever = Retriever()
    misses = [d.title for d in retriever.documents if retriever.search(", ".join(d.keywords), k=1)[0].document != d]
    assert not misses


def test_query_about_a_text_finds_it_and_ranks_are_deterministic():
    first = retrieve_text("lighthouse storm waves", k=3)
    assert first[0].title == "Lighthouse in a Storm"
    assert [h.score for h in first] == sorted((h.score for h in first), reverse=True)
    assert [h.document for h in retrieve_text("lighthouse storm waves", k=3)] == [h.document for h in first]


def test_accents_are_folded_and_plurals_match():
    assert retrieve_text("zurich cafe", k=1)[0].document.slug == "cafe-terrace-in-zurich"
    assert tokenize("Waves") == tokenize("wave")


def test_shared_word_is_disambiguated_by_the_other_keywords():
    assert retrieve_text("harbour cranes night", k=1)[0].title == "Container Harbour at Night"
    assert retrieve_text("harbour boats low tide", k=1)[0].title == "Fishing Harbour at Low Tide"


def test_nothing_matches_gives_an_empty_list_and_get_text_explains():
    assert retrieve_text("xyzzy qwerty") == []
    with pytest.raises(TextError, match="Try other keywords"):
        get_text("xyzzy qwerty", source="corpus")


@pytest.mark.parametrize("bad", ["", "   ", [], None])
def test_empty_keywords_are_refused(bad):
    with pytest.raises(TextError, match="No keywords"):
        get_text(bad, source="corpus")


def test_unknown_source_is_refused():
    with pytest.raises(TextError, match="auto, llm, corpus, rag"):
        get_text("owl", source="wikipedia")


def test_index_is_fast():
    started = time.perf_counter()
    retriever = Retriever()
    for _ in range(20):
        retriever.search("spice market colours")
    assert time.perf_counter() - started < 2


def test_bad_corpus_file_names_the_format(tmp_path):
    path = tmp_path / "broken.md"
    path.write_text("just one line\n")
    with pytest.raises(TextError, match="README"):
        parse_document(path)
    assert (CORPUS_DIR / "README.md").exists()


def test_llm_text(llm, llm_server):
    text = get_text(["owl", "moonlit forest"], source="llm", llm=llm, temperature=0.3)
    assert text.source == "llm" and text.model == "test-model" and text.text
    sent = llm_server.requests[-1]
    assert "Keywords: owl, moonlit forest" in sent["messages"][-1]["content"]
    assert "painter" in sent["messages"][0]["content"]  # the system prompt from data/prompts/
    assert "written by test-model" in text.describe()


def test_rag_grounds_the_llm_in_retrieved_texts(llm, llm_server):
    text = get_text("lighthouse storm", source="rag", llm=llm)
    assert text.source == "rag" and text.hits[0].title == "Lighthouse in a Storm"
    user = llm_server.requests[-1]["messages"][-1]["content"]
    assert "[1] Lighthouse in a Storm" in user and text.hits[0].text in user


def test_auto_uses_the_llm_when_it_answers(llm):
    assert get_text("owl", source="auto", llm=llm).source == "llm"


def test_auto_falls_back_to_retrieval_and_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = get_text("lighthouse storm", source="auto", llm=LLM(f"http://127.0.0.1:{port}/v1"))
    assert text.source == "corpus" and text.title == "Lighthouse in a Storm"
    assert "no LLM answered" in text.note and "no LLM answered" in text.describe()


def test_rag_without_matching_texts_says_the_llm_wrote_it_alone(llm):
    text = get_text("xyzzy qwerty", source="rag", llm=llm)
    assert text.source == "llm" and "without sources" in text.note
