"""Every way a call to A1111 can go wrong gives an A1111Error that names the cause and the fix."""

from __future__ import annotations

import base64
import io
import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fault_server import FaultServer
from helpers.a1111 import A1111Client, A1111Error, InvalidRequest, validate_txt2img

TXT2IMG = ("POST", "/sdapi/v1/txt2img")


def _png_b64(color="red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _ok_body(images, seed=5):
    info = {"seed": seed, "all_seeds": [seed + i for i in range(len(images))], "infotexts": ["x"] * len(images),
            "index_of_first_image": 0, "sd_model_name": "m"}
    return {"images": images, "parameters": {"seed": -1}, "info": json.dumps(info)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_names_the_flag_and_the_port_mixup():
    client = A1111Client(f"http://127.0.0.1:{_free_port()}", auth="", connect_timeout=2)
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
        server.routes[TXT2IMG] = (401, {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": ""}, 0)
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
        sent = server.requests[-1][2]
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
@given(prompt=st.one_of(st.text(max_size=20), st.none(), st.integers()), fields=st.dictionaries(_names, _values, max_size=5))
def test_fuzz_validation_never_crashes_without_a_clear_error(prompt, fields):
    try:
        validate_txt2img({"prompt": prompt, **fields})
    except InvalidRequest as err:
        assert "Fix:" in str(err)
