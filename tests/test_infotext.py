"""A1111's infotext: written and parsed exactly as A1111 writes it into a PNG's "parameters" chunk."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers.infotext import format_infotext, infotext_to_fields, parse_infotext, png_bytes, quote, read_infotext

REFERENCE = ("a cat\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1, "
             "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")


def test_reference_example_is_written_exactly():
    params = {"Steps": 20, "Sampler": "Euler a", "Schedule type": "Automatic", "CFG scale": 7.0, "Seed": 1,
              "Size": "512x512", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly", "Version": "v1.10.1"}
    assert format_infotext("a cat", "", params) == REFERENCE


def test_reference_example_parses():
    parsed = parse_infotext(REFERENCE)
    assert parsed["Prompt"] == "a cat"
    assert parsed["Negative prompt"] == ""
    assert parsed["Steps"] == "20" and parsed["Sampler"] == "Euler a" and parsed["CFG scale"] == "7.0"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "512")
    assert "Size" not in parsed
    assert parsed["Model hash"] == "6ce0161689" and parsed["Version"] == "v1.10.1"
    assert parsed["Clip skip"] == "1" and parsed["RNG"] == "GPU"  # A1111's defaults for missing keys


def test_quoted_values_round_trip():
    params = {"Steps": 20, "Seed": 5, "Size": "512x768", "Lora hashes": "name: abc123", "Note": 'say "hi", then\nleave'}
    text = format_infotext("p", "", params)
    assert 'Lora hashes: "name: abc123"' in text
    parsed = parse_infotext(text)
    assert parsed["Lora hashes"] == "name: abc123"
    assert parsed["Note"] == 'say "hi", then\nleave'


def test_multiline_prompt_and_negative_prompt():
    text = format_infotext("line one\nline two, more", "bad\nworse", {"Steps": 4, "Seed": 9, "Size": "64x64"})
    assert text.startswith("line one\nline two, more\nNegative prompt: bad\nworse\nSteps: 4")
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "line one\nline two, more"
    assert parsed["Negative prompt"] == "bad\nworse"
    assert parsed["Seed"] == "9"


def test_last_line_with_fewer_than_three_pairs_belongs_to_the_prompt():
    parsed = parse_infotext("a portrait\nstyle: oil, mood: calm")
    assert parsed["Prompt"] == "a portrait\nstyle: oil, mood: calm"
    assert "style" not in parsed


def test_none_values_are_left_out_and_bare_keys_are_written_as_keys():
    text = format_infotext("x", "", {"Steps": 2, "Tiling": None, "Seed": 3, "Size": "8x8", "Hires": "Hires"})
    assert "Tiling" not in text
    assert text.endswith("Hires")


def test_empty_prompt_starts_with_steps():
    assert format_infotext("", "", {"Steps": 1, "Seed": 2, "Size": "8x8"}) == "Steps: 1, Seed: 2, Size: 8x8"


def test_quote_rules():
    assert quote("plain") == "plain"
    assert quote("a:b") == '"a:b"'
    assert quote("ümlaut, ok") == '"ümlaut, ok"'  # non-ASCII kept, as A1111 does


def test_fields_for_regeneration():
    fields = infotext_to_fields(format_infotext("a cat", "dog", {
        "Steps": 12, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 5.5, "Seed": 77,
        "Size": "640x384", "Clip skip": 2}))
    assert fields == {"prompt": "a cat", "negative_prompt": "dog", "steps": 12, "sampler_name": "DPM++ 2M",
                      "scheduler": "Karras", "cfg_scale": 5.5, "seed": 77, "width": 640, "height": 384,
                      "override_settings": {"CLIP_stop_at_last_layers": 2}}


def test_png_chunk_round_trip_latin1_and_unicode(tmp_path):
    for text in (REFERENCE, "ein Bär im Schnee, 雪\nSteps: 3, Seed: 4, Size: 8x8"):
        data = png_bytes(Image.new("RGB", (8, 8)), text)
        assert read_infotext(data) == text
        path = tmp_path / "x.png"
        path.write_bytes(data)
        assert read_infotext(path) == text
        with Image.open(path) as image:
            assert read_infotext(image) == text


def test_png_without_chunk_reads_none():
    assert read_infotext(png_bytes(Image.new("RGB", (8, 8)), None)) is None


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).map(str.strip).filter(
    lambda s: s and not s.startswith("Negative prompt:"))


@settings(max_examples=200, deadline=None)
@given(prompt=_text, negative=st.one_of(st.just(""), _text), seed=st.integers(0, 2**32 - 1),
       sampler=st.sampled_from(["Euler a", "DPM++ 2M", "weird, name: x"]), note=_text)
def test_round_trip_property(prompt, negative, seed, sampler, note):
    params = {"Steps": 20, "Sampler": sampler, "Seed": seed, "Size": "512x512", "Note": note}
    parsed = parse_infotext(format_infotext(prompt, negative, params))
    assert parsed["Seed"] == str(seed)
    assert parsed["Sampler"] == sampler
    assert parsed["Note"] == note.strip() or parsed["Note"] == note
    if "\n" not in prompt:
        assert parsed["Prompt"] == prompt
