"""Every way a call to A1111 can go wrong gives an A1111Error that names the cause and the fix."""

from __future__ import annotations

import base64
import io
import json

import pytest
from conftest import bomb_png_b64, free_port, png_b64
from fault_server import FaultServer, RawReply, truncated_json_reply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers.a1111 import A1111Client, A1111Error, InvalidRequest, validate_txt2img

TXT2IMG = ("POST", "/sdapi/v1/txt2img")


def _png_b64(color="red") -> str:
    return png_b64(Image.new("RGB", (8, 8), color))


def _ok_body(images, seed=5):
    info = {"seed": seed, "all_seeds": [seed + i for i in range(len(images))], "infotexts": ["x"] * len(images),
            "index_of_first_image": 0, "sd_model_name": "m"}
    return {"images": images, "parameters": {"seed": -1}, "info": json.dumps(info)}


def test_server_down_names_the_flag_and_the_port_mixup():
    client = A1111Client(f"http://127.0.0.1:{free_port()}", auth="", connect_timeout=2)
    with pytest.raises(A1111Error) as err:
        client.txt2img("a cat")
    assert err.value.status is None
    assert "Cannot connect" in str(err.value)
    assert "--api" in str(err.value) and "make serve" in str(err.value)


def test_port_7860_hint_mentions_7861_and_localhost_hint_mentions_ipv4():
    assert "7861" in A1111Client("http://127.0.0.1:7860", auth="")._connection_hint()
    assert "127.0.0.1" in A1111Client("http://localhost:7860", auth="")._connection_hint()


def test_api_not_enabled_404():
    with FaultServer() as server:  # answers 404 {"detail": "Not Found"} everywhere, like A1111 without --api
        with pytest.raises(A1111Error) as err:
            A1111Client(server.url, auth="").txt2img("a cat")
    assert err.value.status == 404
    assert "API is not enabled" in str(err.value)
    assert "COMMANDLINE_ARGS" in str(err.value) and "webui-user.bat" in str(err.value)


@pytest.mark.parametrize("auth, expected", [("", "SD_AUTH=user:password"), ("ann:wrong", "does not match")])
def test_auth_missing_or_wrong_401(auth, expected):
    with FaultServer() as server:
        body = {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": ""}
        server.routes[TXT2IMG] = (401, body, 0)
        with pytest.raises(A1111Error) as err:
            A1111Client(server.url, auth=auth).txt2img("a cat")
    assert err.value.status == 401
    assert expected in str(err.value)
    assert "wrong" not in str(err.value)  # the password is never echoed


def test_validation_error_422_names_the_field():
    body = {"detail": [{"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "type_error.integer"}]}
    with FaultServer() as server:
        server.routes[TXT2IMG] = (422, body, 0)
        with pytest.raises(A1111Error) as err:
            A1111Client(server.url, auth="").txt2img("a cat")
    assert err.value.status == 422
    assert "field 'steps': value is not a valid integer" in str(err.value)


def test_server_error_500_carries_a1111_error_text():
    body = {"error": "TypeError", "detail": "", "body": "",
            "errors": "'<' not supported between instances of 'int' and 'NoneType'"}
    with FaultServer() as server:
        server.routes[TXT2IMG] = (500, body, 0)
        with pytest.raises(A1111Error) as err:
            A1111Client(server.url, auth="").txt2img("a cat")
    assert err.value.status == 500
    assert "TypeError: '<' not supported" in str(err.value)
    assert "console" in err.value.fix


def test_read_timeout_says_what_to_do():
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, _ok_body([_png_b64()]), 3)
        with pytest.raises(A1111Error) as err:
            A1111Client(server.url, auth="", timeout=0.5).txt2img("a cat")
    assert "did not answer within 0.5 s" in str(err.value)
    assert "SD_TIMEOUT" in str(err.value) and "interrupt" in str(err.value)


@pytest.mark.parametrize("image, words", [
    ("%%%not-base64%%%", "not valid base64"),
    (base64.b64encode(b"GIF89a but not really an image").decode(), "not a readable image"),
])
def test_broken_images_in_a_response(image, words):
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, _ok_body([image]), 0)
        with pytest.raises(A1111Error) as err:
            A1111Client(server.url, auth="").txt2img("a cat")
    assert words in str(err.value)


def test_jpeg_image_is_accepted_with_a_warning_and_saved_as_png(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, format="JPEG")
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, _ok_body([base64.b64encode(buffer.getvalue()).decode()]), 0)
        with pytest.warns(UserWarning, match="samples_format='png'"):
            gen = A1111Client(server.url, auth="").txt2img("a cat")
    path = gen.save(tmp_path)[0]
    with Image.open(path) as image:
        assert image.format == "PNG" and image.info["parameters"] == "x"


def test_html_instead_of_json():
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, "<html>login</html>", 0)
        with pytest.raises(A1111Error, match="not with JSON"):
            A1111Client(server.url, auth="").txt2img("a cat")


def test_grid_is_dropped_and_real_seeds_used():
    body = _ok_body([_png_b64("white"), _png_b64("red"), _png_b64("blue")], seed=10)
    info = json.loads(body["info"])
    info.update(index_of_first_image=1, all_seeds=[10, 11])
    body["info"] = json.dumps(info)
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, body, 0)
        gen = A1111Client(server.url, auth="").txt2img("a cat", seed=-1)
        sent = next(payload for method, path, payload in server.requests if (method, path) == TXT2IMG)
    assert gen.seeds == [10, 11]
    assert [img.getpixel((0, 0)) for img in gen.images] == [(255, 0, 0), (0, 0, 255)]
    # the client always sends the sampler and override_settings explicitly
    assert sent["sampler_name"] == "Euler a" and sent["override_settings"] == {}


@pytest.mark.parametrize("prompt", ["", "   ", None, ["a", "b"]])
def test_empty_or_wrong_prompt_is_refused_before_sending(prompt):
    with FaultServer() as server:
        with pytest.raises(InvalidRequest):
            A1111Client(server.url, auth="").txt2img(prompt)
        assert server.requests == []


@pytest.mark.parametrize("fields, words", [
    ({"stepz": 20}, "did you mean 'steps'"),
    ({"guidance_scale": 7}, "did you mean 'cfg_scale'"),
    ({"width": 500}, "multiple of 8"),
    ({"height": 0}, "multiple of 8"),
    ({"steps": 0}, "steps=0"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"steps": 2.5}, "whole number"),
    ({"cfg_scale": "high"}, "cfg_scale"),
    ({"seed": -7}, "seed=-7"),
    ({"enable_hr": True}, "denoising_strength"),
])
def test_validation_names_the_field_and_the_fix(fields, words):
    with pytest.raises(InvalidRequest) as err:
        validate_txt2img({"prompt": "a cat", **fields})
    assert words in str(err.value)
    assert "Fix:" in str(err.value)


_values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=10), st.lists(st.integers(), max_size=3))
_names = st.sampled_from(["steps", "width", "height", "batch_size", "n_iter", "cfg_scale", "seed", "sampler_name",
                          "negative_prompt", "stepz", "denoising_strength", "enable_hr"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=st.one_of(st.text(max_size=20), st.none(), st.integers()),
       fields=st.dictionaries(_names, _values, max_size=5))
def test_fuzz_validation_never_crashes_without_a_clear_error(prompt, fields):
    try:
        validate_txt2img({"prompt": prompt, **fields})
    except InvalidRequest as err:
        assert "Fix:" in str(err)


# --- Issue 11: everything the client receives is validated at the boundary ------------------------------
# Each reply below once escaped as AttributeError, TypeError, ValueError, PIL's DecompressionBombError or
# requests' ChunkedEncodingError; now each is an A1111Error that names the field and keeps what was good.

PROGRESS = ("GET", "/sdapi/v1/progress")


def _body_with(images=None, **info_changes):
    """A txt2img reply whose info (a dict here, JSON-encoded on the way) has ``info_changes`` applied."""
    body = _ok_body(images if images is not None else [_png_b64()])
    info = json.loads(body["info"])
    info.update(info_changes)
    body["info"] = json.dumps(info)
    return body


def _txt2img_error(body, **kwargs) -> A1111Error:
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, body, 0)
        client = A1111Client(server.url, auth="")
        with pytest.raises(A1111Error) as err:
            client.txt2img("a cat", **kwargs)
    assert "Traceback" not in str(err.value)
    return err.value


@pytest.mark.parametrize("body, words", [
    ({"images": [123], "parameters": {}, "info": json.dumps({"seed": 1, "all_seeds": [1]})}, "images[0] is int"),
    ({"images": "abc", "parameters": {}, "info": "{}"}, "'images' is str, not a list"),
    ({"images": [_png_b64()], "parameters": {}, "info": "[1,2]"}, "'info' is a JSON list"),
    ({"images": [_png_b64()], "parameters": {}, "info": "null"}, "'info' is a JSON null"),
    ({"images": [_png_b64()], "parameters": {}, "info": 5}, "'info' is int"),
    ({"images": [_png_b64()], "parameters": {}, "info": "{not json"}, "'info' is not valid JSON"),
    ({"images": [_png_b64()], "parameters": "p", "info": "{}"}, "'parameters' is str"),
    (_body_with(all_seeds=["x"]), "all_seeds[0] is 'x'"),
    (_body_with(all_seeds="1,2"), "'all_seeds' is str"),
    (_body_with(all_seeds=[True]), "all_seeds[0] is True"),
    (_body_with(all_seeds=None, seed="5"), "'seed' is '5'"),
    (_body_with(infotexts=[5]), "infotexts[0] is int"),
    (_body_with(infotexts="x"), "'infotexts' is str"),
    (_body_with(index_of_first_image="1"), "index_of_first_image"),
    (_body_with(index_of_first_image=7), "index_of_first_image"),
    ([1, 2], "not an object"),
])
def test_malformed_reply_is_an_a1111_error_naming_the_field(body, words):
    err = _txt2img_error(body)
    assert words in str(err)
    assert "127.0.0.1" in str(err) and "Fix:" in str(err)


def test_good_images_are_kept_when_one_is_bad():
    body = _body_with([_png_b64("red"), 123, _png_b64("blue")], seed=5, all_seeds=[5, 6, 7], infotexts=["a", "b", "c"])
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, body, 0)
        client = A1111Client(server.url, auth="")
        with pytest.raises(A1111Error, match=r"images\[1\] is int") as err:
            client.txt2img("a cat")
    partial = err.value.generation
    assert partial is not None and client.last is partial
    assert partial.seeds == [5, 7] and partial.infotexts == ["a", "c"] and len(partial.png) == 2
    assert [image.getpixel((0, 0)) for image in partial.images] == [(255, 0, 0), (0, 0, 255)]
    assert "2 good image(s) kept" in str(err.value)


def test_decompression_bomb_is_refused_and_the_good_image_kept():
    body = _body_with([_png_b64("red"), bomb_png_b64()], all_seeds=[5, 6], infotexts=["a", "b"])
    err = _txt2img_error(body)
    assert "images[1]" in str(err) and "MAX_IMAGE_PIXELS" in str(err)
    assert err.generation.seeds == [5]


def test_image_over_the_clients_pixel_limit_names_the_limit_and_how_to_raise_it(monkeypatch):
    import helpers.generation

    monkeypatch.setattr(helpers.generation, "MAX_IMAGE_PIXELS", 32)
    err = _txt2img_error(_body_with([_png_b64()]))  # 8 x 8 = 64 pixels
    assert "8x8" in str(err) and "32" in str(err) and "helpers.generation.MAX_IMAGE_PIXELS" in str(err)


def test_truncated_png_is_an_a1111_error():
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(buffer, format="PNG")  # noise: the pixel data is most of the file
    raw = buffer.getvalue()
    err = _txt2img_error(_body_with([base64.b64encode(raw[: len(raw) // 2]).decode()]))
    assert "images[0]" in str(err) and "not a readable image" in str(err)


def _gzip_garbage_reply() -> RawReply:
    data = b"this is not gzip at all"
    return RawReply(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                    + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)


@pytest.mark.parametrize("reply, words", [
    (truncated_json_reply(_ok_body([_png_b64()])), "cut off"),
    (RawReply(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"zz\r\n{}\r\n"), "cut off"),
    (_gzip_garbage_reply(), "could not be decompressed"),
    (RawReply(b""), "closed the connection"),
    (RawReply(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n"
              b"Connection: close\r\n\r\n" + b"[" * 100000 + b"]" * 100000), "nested too deeply"),
])
def test_network_faults_while_reading_name_the_url_and_the_cause(reply, words):
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, reply, 0)
        with pytest.raises(A1111Error) as err:
            A1111Client(server.url, auth="").txt2img("a cat")
    assert words in str(err.value)
    assert f"{server.url}/sdapi/v1/txt2img" in str(err.value) and "Fix:" in str(err.value)
    assert "nothing is listening" not in str(err.value)


@pytest.mark.parametrize("status, answer", [
    (200, "not json"),
    (500, {"error": "boom"}),
    (200, [1, 2, 3]),
    (200, {"state": "busy", "eta_relative": "soon"}),
    (200, {"state": {"sampling_steps": "x", "job_no": None, "sampling_step": [1]}, "eta_relative": [],
           "current_image": 5}),
    (200, {"state": {"sampling_steps": 10, "job_no": 0, "sampling_step": 10**30}, "eta_relative": float("inf")}),
    (200, {"state": {"sampling_steps": 10, "job_no": -3, "sampling_step": 3}, "current_image": "%%%"}),
])
def test_garbage_progress_answers_never_lose_the_generation(status, answer, recwarn):
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, _ok_body([_png_b64()]), 1.5)
        server.routes[PROGRESS] = (status, answer, 0)
        gen = A1111Client(server.url, auth="").txt2img("a cat", progress=True)
    assert len(gen.images) == 1 and gen.seeds == [5]
    assert len([w for w in recwarn if "progress" in str(w.message)]) <= 1


def test_progress_that_keeps_failing_is_given_up_with_one_warning():
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, _ok_body([_png_b64()]), 4)
        server.routes[PROGRESS] = (500, {"error": "boom"}, 0)
        with pytest.warns(UserWarning, match="stopped polling") as warned:
            gen = A1111Client(server.url, auth="").txt2img("a cat", progress=True)
        polls = len([r for r in server.requests if r[1] == PROGRESS[1]])
    assert len(gen.images) == 1
    assert len([w for w in warned if "progress" in str(w.message)]) == 1
    assert polls <= 8  # gave up after a few failures instead of polling for the whole generation


def _interrupted_state(timestamp="20240101120000", interrupted=True):
    return {"progress": 0, "eta_relative": 0, "current_image": None, "textinfo": None,
            "state": {"interrupted": interrupted, "skipped": False, "job": "", "job_count": 0,
                      "job_timestamp": timestamp, "job_no": 0, "sampling_step": 0, "sampling_steps": 0}}


@pytest.mark.parametrize("state, images, expected", [
    (_interrupted_state(), 1, True),                                       # the server's flag, this job
    (_interrupted_state(timestamp="20990101000000"), 1, False),            # the flag belongs to another job
    (_interrupted_state(interrupted=False), 1, False),
    ("garbage", 1, False),
    (_interrupted_state(interrupted=False), "short", True),               # fewer images than seeds
])
def test_interruption_by_anyone_is_detected_from_what_the_server_reports(state, images, expected):
    body = _body_with([_png_b64()], job_timestamp="20240101120000")
    if images == "short":
        body = _body_with([_png_b64()], all_seeds=[5, 6, 7], job_timestamp="20240101120000")
    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, body, 0)
        server.routes[PROGRESS] = (200, state, 0)
        gen = A1111Client(server.url, auth="").txt2img("a cat")
    assert gen.interrupted is expected and len(gen.images) == 1


@pytest.mark.parametrize("call, route, answer, words", [
    (lambda c: c.options(), ("GET", "/sdapi/v1/options"), [1, 2], "options"),
    (lambda c: c.models(), ("GET", "/sdapi/v1/sd-models"), {"title": "x"}, "sd-models"),
    (lambda c: c.models(), ("GET", "/sdapi/v1/sd-models"), [{"name": "x"}], "sd-models"),
    (lambda c: c.models(), ("GET", "/sdapi/v1/sd-models"), [None], "sd-models"),
    (lambda c: c.samplers(), ("GET", "/sdapi/v1/samplers"), [{"name": 5}], "samplers"),
    (lambda c: c.schedulers(), ("GET", "/sdapi/v1/schedulers"), ["nope"], "schedulers"),
    (lambda c: c.interrogate(b"\x89PNG"), ("POST", "/sdapi/v1/interrogate"), {}, "interrogate"),
    (lambda c: c.interrogate(b"\x89PNG"), ("POST", "/sdapi/v1/interrogate"), {"caption": 5}, "interrogate"),
    # A1111 answers 200 and appends "<error>" when its captioner fails (offline: BLIP cannot be downloaded)
    (lambda c: c.interrogate(b"\x89PNG"), ("POST", "/sdapi/v1/interrogate"), {"caption": "<error>"}, "BLIP"),
    (lambda c: c.progress(), PROGRESS, [1], "progress"),
    (lambda c: c.progress(), PROGRESS, {"state": "idle"}, "progress"),
    (lambda c: c.txt2img("a cat"), TXT2IMG, None, "not an object"),
])
def test_other_answers_are_validated_too(call, route, answer, words):
    with FaultServer() as server:
        server.routes[route] = (200, answer, 0)
        with pytest.raises(A1111Error) as err:
            call(A1111Client(server.url, auth=""))
    assert words in str(err.value) and "Fix:" in str(err.value)


@pytest.mark.parametrize("detail", [["just a string"], [{"loc": "steps", "msg": 5}], [{"loc": [None, 3]}], "text"])
def test_odd_422_bodies_still_give_a_clear_error(detail):
    with FaultServer() as server:
        server.routes[TXT2IMG] = (422, {"detail": detail}, 0)
        with pytest.raises(A1111Error) as err:
            A1111Client(server.url, auth="").txt2img("a cat")
    assert err.value.status == 422 and "rejected" in str(err.value)


@pytest.mark.parametrize("status", [200, 401, 403, 422, 500])
def test_a_server_that_echoes_the_password_never_gets_it_shown(status):
    basic = base64.b64encode(b"ann:pa55word").decode()
    echo = f"you sent Authorization: Basic {basic} with password pa55word"
    body = {"error": "Boom pa55word", "errors": echo, "detail": [{"loc": ["body", "pa55word"], "msg": echo}]}
    with FaultServer() as server:
        server.routes[TXT2IMG] = (status, body if status != 200 else {"images": echo}, 0)
        with pytest.raises(A1111Error) as err:
            A1111Client(server.url, auth="ann:pa55word").txt2img("a cat")
    shown = f"{err.value} {err.value.detail}"
    assert "pa55word" not in shown and basic not in shown


_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2, 2**40), st.floats(), st.text(max_size=5)),
                     lambda inner: (st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                     max_leaves=10)
_image = st.sampled_from([_png_b64(), "data:image/png;base64," + _png_b64(), "%%%", "", "QUJD", 7, None])
_info = st.fixed_dictionaries({}, optional={"seed": _json | st.integers(0, 9),
                                            "all_seeds": _json | st.lists(st.integers(0, 9)),
                                            "infotexts": _json | st.lists(st.text(max_size=3)),
                                            "index_of_first_image": _json | st.integers(0, 3), "job_timestamp": _json})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images=st.lists(_image, max_size=4) | _json, info=_info | _json, as_text=st.booleans(), parameters=_json)
def test_fuzz_any_reply_gives_a_generation_or_a_response_error(images, info, as_text, parameters):
    """The validation point never lets another exception through, whatever the shape of the reply."""
    from helpers.generation import Generation, ResponseError

    body = {"images": images, "parameters": parameters, "info": json.dumps(info) if as_text else info}
    try:
        gen = Generation.from_response(body)
    except ResponseError as err:
        assert str(err) and err.fix
        if err.partial is not None:
            assert len(err.partial.images) == len(err.partial.seeds) == len(err.partial.png) >= 1
        return
    assert len(gen.images) == len(gen.seeds) and all(isinstance(s, int) for s in gen.seeds)
    assert all(isinstance(t, str) for t in gen.infotexts)
