"""Secrets never leak (issue 24): keys and URL passwords a server echoes are masked in errors, the console,
run.json and report.html; the doctor and reprs never show a URL password."""

from __future__ import annotations

import base64
import json
import traceback
from urllib.parse import urlsplit

import pytest
from conftest import free_url

from helpers.config import configured_secrets, load_settings, mask, secret_forms
from helpers.llm import LLM, LLMError

KEY = "sk-live-Qz7xLeakyKey0042"
PASSWORD = "pa55-Word9"
BASIC = base64.b64encode(f"ann:{PASSWORD}".encode()).decode()


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"ann:{PASSWORD}@{parts.netloc}").geturl()


def _leaks(text: str) -> list[str]:
    return [secret for secret in (KEY, PASSWORD, BASIC) if secret in text]


@pytest.fixture
def secret_env(monkeypatch, tmp_path):
    """LLM_API_KEY and passwords in SD_URL and LLM_BASE_URL, read from the environment only (no .env)."""
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("LLM_API_KEY", KEY)
    monkeypatch.setenv("SD_URL", _with_password(free_url()))
    monkeypatch.setenv("LLM_BASE_URL", _with_password(free_url() + "/v1"))
    monkeypatch.delenv("SD_AUTH", raising=False)


# ----- the one masker ------------------------------------------------------------------------------

def test_secret_forms_cover_the_key_the_password_the_url_encoding_and_the_basic_header():
    forms = secret_forms(key=KEY, auth="ann:p@ss-word", urls=["http://bob:x%2Fy-z9@gpu:7860"])
    assert {KEY, "p@ss-word", "p%40ss-word", base64.b64encode(b"ann:p@ss-word").decode(),
            "x/y-z9", "x%2Fy-z9", base64.b64encode(b"bob:x/y-z9").decode()} <= set(forms)
    assert secret_forms(key="lm-studio") == []  # a local server's placeholder is no secret


def test_mask_hides_short_passwords_as_words_only():
    assert mask("user ann, password q7; q7x stays", ["q7"]) == "user ann, password ********; q7x stays"
    assert mask(f"Authorization: Basic {BASIC}", secret_forms(auth=f"ann:{PASSWORD}")) == \
        "Authorization: Basic ********"


def test_settings_repr_hides_url_passwords(secret_env):
    settings = load_settings()
    assert not _leaks(repr(settings)) and not _leaks(str(settings))
    assert "ann:********@127.0.0.1" in repr(settings)
    assert PASSWORD in settings.sd_url  # the real value is still there for the clients
    assert {KEY, PASSWORD, BASIC} <= set(configured_secrets())


# ----- the LLM wrapper -----------------------------------------------------------------------------

def test_a_key_echoed_in_a_server_error_is_masked(llm_server):
    llm_server.mode = "echo_key"
    llm = LLM(llm_server.base_url, model="test-model", api_key=KEY, max_retries=0)
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert "Rejected credentials: Bearer ********" in str(err.value)
    assert not _leaks(str(err.value)) and not _leaks(repr(err.value)) and not _leaks(err.value.message)


def test_a_password_in_the_base_url_never_shows(llm_server):
    llm_server.mode = "echo_key"
    llm = LLM(_with_password(llm_server.base_url), model="test-model", api_key=KEY, max_retries=0)
    assert not _leaks(repr(llm)) and not _leaks(llm.base_url) and "ann:********@" in llm.base_url
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert not _leaks(str(err.value)), str(err.value)
    nowhere = LLM(_with_password(free_url() + "/v1"), model="m", api_key=KEY, max_retries=0)
    with pytest.raises(LLMError) as err:
        nowhere.chat("hi")
    assert "Cannot connect to http://ann:********@" in str(err.value) and not _leaks(str(err.value))


def test_the_model_name_check_masks_the_url_password(llm_server):
    llm = LLM(_with_password(llm_server.base_url), model="no-such-model", api_key=KEY, max_retries=0)
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert "has no model 'no-such-model'" in str(err.value) and "ann:********@" in str(err.value)
    assert not _leaks(str(err.value))


@pytest.mark.parametrize("stream", [False, True])
def test_a_key_in_a_reply_is_masked_on_the_console_too(llm_server, capsys, stream):
    llm_server.reply = lambda messages, body: f"Sure, your key is {KEY} and the password {PASSWORD}."
    llm = LLM(_with_password(llm_server.base_url), model="test-model", api_key=KEY, max_retries=0)
    reply = llm.chat("what is my key?", stream=stream)
    assert reply == "Sure, your key is ******** and the password ********."
    printed = capsys.readouterr().out
    assert not _leaks(printed) and (printed.strip() == reply if stream else printed == "")


def test_streamed_pieces_that_split_a_key_are_held_back(llm_server, capsys):
    llm = LLM(llm_server.base_url, model="test-model", api_key=KEY, max_retries=0)
    pieces = ["key: ", KEY[:5], KEY[5:12], KEY[12:], " done"]

    class Chunk:
        def __init__(self, text):
            self.choices = [type("Choice", (), {"delta": type("Delta", (), {"content": text})()})()]

    fake = type("Completions", (), {"create": lambda self, **kw: iter(Chunk(p) for p in pieces)})()
    llm._client = type("Client", (), {"chat": type("Chat", (), {"completions": fake})()})()
    assert llm._stream({"model": "m", "messages": []}) == "key: ******** done"
    assert capsys.readouterr().out == "key: ******** done\n"


# ----- run.json, report.html, the pipeline's error -------------------------------------------------

def test_an_echoed_key_stays_out_of_run_json_the_report_and_the_error(sd_server, llm_server, tmp_path, secret_env,
                                                                      capsys):
    from helpers.a1111 import A1111Client
    from helpers.pipeline import run_pipeline
    from helpers.records import PipelineError

    llm_server.mode = "echo_key"

    class Answering(LLM):  # answers the probe, so the chat is sent and its error is recorded
        def available(self, timeout=3.0):
            return True

    llm = Answering(_with_password(llm_server.base_url), model="test-model", max_retries=0)  # key: LLM_API_KEY
    with pytest.raises(PipelineError) as err:
        run_pipeline("lighthouse, storm", n=1, client=A1111Client(sd_server.url, auth=""), llm=llm, scorer=False,
                     out_dir=tmp_path, progress=False, steps=2, width=64, height=64)
    run = err.value.run
    record = (run.path / "run.json").read_text()
    assert "Rejected credentials" in json.loads(record)["message"]
    report = run.report().read_text()
    for text in (str(err.value), record, report, run.summary(), capsys.readouterr().out):
        assert not _leaks(text), text


def test_a_password_in_llm_base_url_stays_out_of_the_records(sd_server, tmp_path, secret_env):
    from helpers.a1111 import A1111Client
    from helpers.pipeline import run_pipeline

    run = run_pipeline("lighthouse, storm", n=1, client=A1111Client(sd_server.url, auth=""), scorer=False,
                       out_dir=tmp_path, progress=False, steps=2, width=64, height=64)  # LLM_BASE_URL: nobody there
    record = (run.path / "run.json").read_text()
    assert "no LLM answered at http://ann:********@" in record
    assert not _leaks(record) and not _leaks(run.report().read_text())


def test_run_json_masks_a_configured_secret_whatever_put_it_there(tmp_path, secret_env):
    from helpers.records import PipelineRun, load_run

    run = PipelineRun(user_input="fox", path=tmp_path, message=f"a server said {KEY} / Basic {BASIC}",
                      text={"text": "t", "note": f"at http://ann:{PASSWORD}@gpu"})
    run.save()
    assert not _leaks((tmp_path / "run.json").read_text())
    assert load_run(tmp_path).message == "a server said ******** / Basic ********"


# ----- make doctor ---------------------------------------------------------------------------------

def test_the_doctor_never_prints_a_url_password(secret_env, capsys):
    from course.doctor import check_a1111, check_llm, print_report

    checks = check_a1111() + [check_llm()]  # SD_URL, LLM_BASE_URL: nobody listens, with a password each
    assert any("A1111 at http://ann:********@" in c.name for c in checks)
    print_report(checks)
    out = capsys.readouterr().out
    assert "Settings(" in out and "cannot connect" in out and not _leaks(out), out


# ----- make submission ------------------------------------------------------------------------------

@pytest.fixture
def scan_env(monkeypatch, tmp_path):
    """No secret configured unless a test sets one (the environment wins over any .env)."""
    monkeypatch.chdir(tmp_path)
    for name in ("SD_AUTH", "SD_URL", "LLM_BASE_URL"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("LLM_API_KEY", "not-needed")
    return monkeypatch


def _ran_notebook(*cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    for count, (source, printed) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=count)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)] if printed else []
        nb.cells.append(cell)
    return nb


def test_a_key_in_a_text_attachment_is_found(scan_env):
    import nbformat

    from course.secret_scan import find_secrets

    scan_env.setenv("LLM_API_KEY", "lmstudio-token-98765")  # no pattern knows its shape: only the setting does
    cell = nbformat.v4.new_markdown_cell("See ![notes](attachment:notes.txt)")
    text = f"OPENAI_API_KEY={KEY}\nLLM_API_KEY=lmstudio-token-98765\n"
    cell.attachments = {"notes.txt": {"text/plain": base64.b64encode(text.encode()).decode()}}
    found = find_secrets(nbformat.v4.new_notebook(cells=[cell]))
    assert "cell 1 attachment: an OpenAI-style API key" in found
    assert "cell 1 attachment: the configured LLM_API_KEY" in found
    cell.attachments = {"notes.txt": {"text/plain": base64.b64encode(b"just notes").decode()}}
    assert find_secrets(nbformat.v4.new_notebook(cells=[cell])) == []


def test_the_sd_auth_password_as_a_basic_header_is_found(scan_env):
    from course.secret_scan import find_secrets

    scan_env.setenv("SD_AUTH", "ann:tr0ub4dor")
    header = "Authorization: Basic " + base64.b64encode(b"ann:tr0ub4dor").decode()
    found = find_secrets(_ran_notebook(("print(session.headers)", header + "\n")))
    assert "cell 1 output 1: the configured A1111 password (SD_AUTH) as an HTTP Basic header" in found
    other = "Authorization: Basic " + base64.b64encode(b"bob:other-pass").decode()  # not configured: still a header
    assert find_secrets(_ran_notebook(("h", other))) == ["cell 1 output 1: an HTTP Basic auth header (a user and "
                                                         "password)"]
    assert find_secrets(_ran_notebook(("print('Basic settings')", "Basic settings\n"))) == []


@pytest.mark.parametrize("url, written", [
    ("http://ann:Zebra-77x@gpu-server:7860", 'pw = "Zebra-77x"'),
    ("http://ann:q7@gpu-server:7860", "# log in as ann:q7"),      # a short one: next to the user name
    ("http://ann:p%40ss-99@gpu-server:7860", "login('ann', 'p@ss-99')"),  # URL-encoded in SD_URL
])
def test_the_sd_url_password_is_found_anywhere(scan_env, url, written):
    from course.secret_scan import find_secrets

    scan_env.setenv("SD_URL", url)
    assert find_secrets(_ran_notebook((written, None))) == ["cell 1: the password in SD_URL"]


def test_the_llm_base_url_password_is_found_too(scan_env):
    from course.secret_scan import find_secrets

    scan_env.setenv("LLM_BASE_URL", "https://bob:Velvet-Owl-4@llm.example/v1")
    assert "cell 1 output 1: the password in LLM_BASE_URL" in find_secrets(_ran_notebook(("x", "Velvet-Owl-4\n")))


def _run_cli(args, env_extra=()):
    import os
    import subprocess
    import sys

    env = {**os.environ, "SD_AUTH": "", "SD_URL": "", "LLM_BASE_URL": "", "LLM_API_KEY": "not-needed",
           **dict(env_extra)}
    return subprocess.run([sys.executable, "-m", "course", "submit", *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


@pytest.mark.parametrize("content, why", [
    (f"LLM_API_KEY={KEY}\nSD_AUTH=ann:hunter2-long\n", "not JSON"),   # e.g. a symlinked .env
    ('[{"key": "' + KEY + '"}]', "JSON, but not a Jupyter notebook"),
    (b"\xff\xfe" + KEY.encode("utf-16-le"), "not UTF-8 text"),
])
def test_a_file_that_is_not_a_notebook_gets_one_line_and_none_of_its_content(tmp_path, scan_env, content, why):
    from course.submission import SubmissionError, submit, submit_all

    env_file = tmp_path / "dot.env"
    env_file.write_bytes(content if isinstance(content, bytes) else content.encode())
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "01_first.ipynb").symlink_to(env_file)
    for call in (lambda: submit_all(folder, name="a", out_dir=tmp_path / "out"),
                 lambda: submit(folder / "01_first.ipynb", name="a", out_dir=tmp_path / "out")):
        with pytest.raises(SubmissionError) as err:
            call()
        message = str(err.value)
        assert message.startswith(f"01_first.ipynb is not a notebook ({why})") and "\n" not in message
        assert KEY[3:12] not in message and "hunter2" not in message and "LLM_API_KEY" not in message
        shown = "".join(traceback.format_exception(err.value))  # even a traceback, chained errors included
        assert KEY[3:12] not in shown and "hunter2" not in shown
    out = _run_cli(["--dir", str(folder), "--name", "eve", "--out", str(tmp_path / "out")])
    assert out.returncode == 1 and out.stderr == ""
    assert out.stdout.strip().splitlines() == [f"Not submitted. 01_first.ipynb is not a notebook ({why}), so "
                                               "nothing was submitted. Fix: submit the .ipynb file Jupyter saved "
                                               "(File > Save Notebook), or move this file out of the folder."]
    assert not (tmp_path / "out").exists()


def test_file_names_are_shown_with_control_characters_escaped(tmp_path, scan_env):
    import nbformat

    from course.submission import SubmissionError, submit_all

    hostile = "02_\x1b[2J\x1b]0;owned\x07\u202egpj.ipynb"
    folder = tmp_path / "work"
    folder.mkdir()
    nbformat.write(_ran_notebook(("print(key)", KEY + "\n")), folder / hostile)
    with pytest.raises(SubmissionError) as err:
        submit_all(folder, name="a", out_dir=tmp_path / "out")
    message = str(err.value)
    assert "02_\\x1b[2J\\x1b]0;owned\\x07\\u202egpj.ipynb, cell 1 output 1: an OpenAI-style API key" in message
    assert message.isprintable() or all(ch.isprintable() for ch in message.replace("\n", ""))
    (folder / hostile).write_text("not json")
    out = _run_cli(["--dir", str(folder), "--name", "eve", "--out", str(tmp_path / "out")])
    assert "\x1b" not in out.stdout and "\u202e" not in out.stdout and "\x07" not in out.stdout
    assert "02_\\x1b[2J" in out.stdout
    nbformat.write(_ran_notebook(("print(1)", "1\n")), folder / hostile)  # a clean one: the summary escapes it
    result = submit_all(folder, name="a", out_dir=tmp_path / "out")
    assert "| 02_\\x1b[2J\\x1b]0;owned\\x07\\u202egpj | yes |" in result.summary
    assert all(ch.isprintable() for ch in result.summary.replace("\n", ""))
