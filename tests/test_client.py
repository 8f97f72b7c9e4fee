"""The A1111 client against the kit's A1111-compatible server over real HTTP.

These are the protocol tests every engine of the kit's server must pass. Each test that takes
the ``client`` fixture runs once per engine (preview, and diffusers on a tiny model when it is
installed) and auth mode (none, --api-auth); the ``slow`` ones once per engine.
"""

from __future__ import annotations

import _thread
import gc
import threading
import time

import pytest
from conftest import AUTH, ENGINES, same_pixels

from helpers.a1111 import A1111Client, A1111Error, GenerationInterrupted
from helpers.images import encode_b64
from helpers.infotext import infotext_to_fields, parse_infotext, read_infotext

SMALL = {"width": 128, "height": 96, "steps": 3}


@pytest.fixture(params=[(engine, auth) for engine in ENGINES for auth in ("no-auth", "api-auth")],
                ids=lambda param: "-".join(param))
def client(request, servers):
    """An A1111Client against the kit's server: per engine, once without and once with --api-auth."""
    engine, auth = request.param
    server = servers(engine, auth=auth == "api-auth")
    return A1111Client(server.url, auth=AUTH if auth == "api-auth" else "")


@pytest.fixture(params=ENGINES)
def slow(request, servers):
    """A client of a server that spends at least 0.05 s per step, for progress and interrupt."""
    return A1111Client(servers(request.param, step_delay=0.05).url, auth="")


def engine_of(client) -> str:
    return client.get("cmd-flags").get("engine", "preview")


def test_txt2img_returns_images_real_seeds_and_infotext(client):
    gen = client.txt2img("a lighthouse at dusk", negative_prompt="blurry", seed=-1, batch_size=2, **SMALL)
    assert len(gen.images) == 2 and gen.images[0].size == (128, 96)
    assert gen.seeds[0] != -1 and gen.seeds[1] == gen.seeds[0] + 1
    assert gen.parameters["seed"] == -1  # the echo of the request, which is why seeds come from info
    settings = parse_infotext(gen.infotexts[1])
    assert settings["Prompt"] == "a lighthouse at dusk" and settings["Negative prompt"] == "blurry"
    assert settings["Seed"] == str(gen.seeds[1]) and settings["Steps"] == "3"
    assert (settings["Size-1"], settings["Size-2"]) == ("128", "96")
    assert settings["Sampler"] == "Euler a"  # the client's explicit default, not the API's "Euler"
    placeholder = engine_of(client) == "preview"  # the only engine whose images are placeholders
    assert gen.is_placeholder == placeholder and ("PLACEHOLDER" in repr(gen)) == placeholder


def test_same_seed_same_pixels_other_seed_other_pixels(client):
    a = client.txt2img("a red fox", seed=11, **SMALL).image
    b = client.txt2img("a red fox", seed=11, **SMALL).image
    c = client.txt2img("a red fox", seed=12, **SMALL).image
    assert same_pixels(a, b)
    assert not same_pixels(a, c)


def test_batch_equals_single_calls_with_consecutive_seeds(client):
    batch = client.txt2img("a blue whale", seed=100, batch_size=3, **SMALL)
    assert batch.seeds == [100, 101, 102]
    single = client.txt2img("a blue whale", seed=102, **SMALL)
    assert same_pixels(batch.images[2], single.image)


def test_n_iter_makes_more_images(client):
    gen = client.txt2img("a tram", seed=5, batch_size=2, n_iter=2, **SMALL)
    assert gen.seeds == [5, 6, 7, 8]


def test_save_keeps_infotext_never_overwrites_and_regenerates(client, tmp_path):
    gen = client.txt2img("a windmill, oil painting", seed=42, cfg_scale=5, **SMALL)
    first = gen.save(tmp_path)
    second = gen.save(tmp_path)
    assert first[0] != second[0] and all(p.exists() for p in first + second)
    text = read_infotext(first[0])
    assert text == gen.infotexts[0]
    fields = infotext_to_fields(text)
    again = client.txt2img(fields.pop("prompt"), **fields)
    assert again.seeds == [42]
    assert same_pixels(again.image, gen.image)


def test_lists_and_options(client):
    gen = client.txt2img("a kite", seed=1, **SMALL)
    loaded = client.options()["sd_model_checkpoint"]
    assert loaded in client.models() and loaded.startswith(gen.info["sd_model_name"])
    assert loaded.startswith("offline-preview") == (engine_of(client) == "preview")
    assert {"Euler a", "DPM++ 2M", "DDIM"} <= set(client.samplers())
    assert {"Automatic", "Karras"} <= set(client.schedulers())
    options = client.options()
    assert options["samples_format"] == "png"
    client.set_options(CLIP_stop_at_last_layers=2)
    assert client.options()["CLIP_stop_at_last_layers"] == 2
    client.set_options(CLIP_stop_at_last_layers=1)


def test_unknown_option_is_a_clear_500(client):
    with pytest.raises(A1111Error) as err:
        client.set_options(no_such_option=1)
    assert err.value.status == 500 and "no_such_option" in str(err.value)


def test_png_info_and_interrogate(client):
    gen = client.txt2img("a snowy village", seed=3, **SMALL)
    info = client.post("png-info", {"image": encode_b64(gen.png[0])})  # A1111's own reading of the PNG
    assert info["info"] == gen.infotexts[0]
    assert info["parameters"]["Seed"] in (3, "3")
    assert parse_infotext(info["info"])["Prompt"] == "a snowy village"
    assert "placeholder" in client.interrogate(gen.image).lower()


def test_progress_when_idle(client):
    state = client.progress()
    assert state["state"]["job_count"] == 0 and state["progress"] == 0


def test_live_progress_in_a_terminal(slow, capsys):
    client = slow
    gen = client.txt2img("a comet", seed=1, progress=True, **{**SMALL, "steps": 20})
    assert len(gen.images) == 1
    err = capsys.readouterr().err
    assert "txt2img" in err and "20/20" in err



def test_one_request_thread_per_client_reused_and_gone_with_the_client(sd_server):
    def request_threads():  # the clients' request threads (the servers' own threads are theirs to keep)
        return {thread for thread in threading.enumerate() if thread.name.startswith("a1111-request")}

    before = request_threads()
    client = A1111Client(sd_server.url, auth="")
    for _ in range(5):
        client.txt2img("a comet", **SMALL)
    ours = request_threads() - before
    assert len(ours) == 1  # made on the first call, reused by the next four
    del client
    gc.collect()
    deadline = time.monotonic() + 5
    while any(thread.is_alive() for thread in ours) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(thread.is_alive() for thread in ours)  # it ends with its client


def test_server_interrupt_returns_partial_images(slow):
    client = slow
    threading.Timer(0.4, client.interrupt).start()
    started = time.perf_counter()
    gen = client.txt2img("a long job", seed=1, n_iter=3, **{**SMALL, "steps": 40})
    assert time.perf_counter() - started < 3  # 3 x 40 steps x 0.05 s would be 6 s
    assert 1 <= len(gen.images) < 3
    assert gen.interrupted and client.last is gen
    assert not client.txt2img("a short job", **SMALL).interrupted  # the flag does not stick


def test_interrupt_by_another_client_sets_generation_interrupted(slow):
    """Someone else presses Interrupt during a one-batch job (a full set of images comes back):
    only the server's state tells the client, and it must still say so."""
    client = slow
    theirs = A1111Client(client.base_url, auth="")
    threading.Timer(0.4, theirs.interrupt).start()
    gen = client.txt2img("a long job", seed=1, **{**SMALL, "steps": 40})
    assert len(gen.images) == 1 and gen.interrupted and client.last is gen
    assert gen.info["interrupted"] is True  # the kit's server says so in its answer (A1111's does not)
    later = client.txt2img("a short job", **SMALL)
    assert not later.interrupted and "interrupted" not in later.info  # the next job resets the server's flag


@pytest.mark.parametrize("version, asked", [("kit-preview", ["txt2img"]), ("v1.10.1", ["txt2img", "progress"])])
def test_only_a_server_whose_answer_cannot_say_interrupted_is_asked_after_a_call(sd_server, monkeypatch, version,
                                                                                   asked):
    """A1111's answer never says that someone else interrupted the job, so the client asks /progress (its
    ``interrupted`` flag and ``job_timestamp``); the kit's server says it in the answer: no extra request."""
    client = A1111Client(sd_server.url, auth="")
    paths, request, read = [], client.request, client._read_generation

    def counted(method, path, **kwargs):
        paths.append(path)
        return request(method, path, **kwargs)

    def answer_of(body, path="txt2img"):
        generation = read(body, path)
        generation.info["version"] = version
        return generation

    monkeypatch.setattr(client, "request", counted)
    monkeypatch.setattr(client, "_read_generation", answer_of)
    assert not client.txt2img("a fox", **SMALL).interrupted
    assert paths == asked


def test_ctrl_c_interrupts_the_server_and_keeps_partial_images(slow, ctrl_c_works):
    client = slow
    threading.Timer(0.4, _thread.interrupt_main).start()
    with pytest.raises(GenerationInterrupted) as err:
        client.txt2img("a long job", seed=9, **{**SMALL, "steps": 60})
    assert err.value.generation is not None and err.value.generation.interrupted
    assert client.last is err.value.generation and client.last.seeds == [9]
    deadline = time.monotonic() + 5  # the server really stopped
    while client.progress()["state"]["job_count"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.progress()["state"]["job_count"] == 0


def test_repr_hides_the_password(servers):
    client = A1111Client(servers("preview", auth=True).url, auth=AUTH)
    assert "s3cret" not in repr(client) and "student:********" in repr(client)


def test_a_sampler_or_schedule_the_server_lacks_is_refused_before_sending(client):
    """Like A1111 1.10, the kit's server falls back to DPM++ 2M or Automatic for a name it does not know (200);
    the client checks names against /samplers and /schedulers and refuses, naming the closest one. Old-style
    "DPM++ 2M Karras" and a schedule's lower-case name are what A1111 reads, and pass."""
    from helpers.a1111 import InvalidRequest

    small = {"width": 64, "height": 64, "steps": 2, "seed": 1}
    with pytest.raises(InvalidRequest, match=r"Unknown sampler 'Euler z' \(did you mean 'Euler a'\?\)"):
        client.txt2img("a cat", sampler_name="Euler z", **small)
    with pytest.raises(InvalidRequest, match=r"Unknown scheduler 'Karas' \(did you mean 'Karras'\?\).*silently"):
        client.txt2img("a cat", scheduler="Karas", **small)
    for sampler, scheduler in (("DPM++ 2M Karras", None), ("DPM++ 2M", "karras")):
        fields = parse_infotext(client.txt2img("a cat", sampler_name=sampler, scheduler=scheduler,
                                                     **small).infotexts[0])
        assert (fields["Sampler"], fields["Schedule type"]) == ("DPM++ 2M", "Karras")


def test_a_server_without_sampler_lists_is_not_checked():
    from fault_server import FaultServer
    from test_client_faults import TXT2IMG, _body_with, _png_b64

    with FaultServer() as server:
        server.routes[TXT2IMG] = (200, _body_with([_png_b64()]), 0)
        gen = A1111Client(server.url, auth="").txt2img("a cat", sampler_name="My own sampler")
    assert len(gen.images) == 1
