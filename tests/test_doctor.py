"""The preflight: each failure says what is wrong and how to fix it."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from conftest import free_url
from fault_server import FaultServer

from course import doctor
from course.doctor import FAIL, OK, WARN, check_a1111, check_llm, check_packages, run_checks


def test_kit_server_is_reachable_and_reported_as_placeholders(sd_server):
    checks = check_a1111(sd_server.url, auth="")
    assert [c.status for c in checks] == [OK, WARN]
    assert "PLACEHOLDERS" in checks[1].message and "make serve ENGINE=diffusers" in checks[1].fix


def test_auth_accepted(sd_server_auth):
    checks = check_a1111(sd_server_auth.url, auth=("student", "s3cret-pass"))
    assert checks[0].status == OK and "auth accepted" in checks[0].message


@pytest.mark.parametrize("auth, words", [("", "required"), ("student:wrong", "rejected")])
def test_auth_missing_or_wrong(sd_server_auth, auth, words):
    (check,) = check_a1111(sd_server_auth.url, auth=auth)
    assert check.status == FAIL and words in check.message and "SD_AUTH" in check.fix


def test_api_not_enabled():
    with FaultServer() as server:
        (check,) = check_a1111(server.url, auth="")
    assert check.status == FAIL and "API is not enabled" in check.message
    assert "--api" in check.fix and "COMMANDLINE_ARGS" in check.fix


def test_no_model_loaded():
    with FaultServer() as server:
        server.routes[("GET", "/sdapi/v1/progress")] = (200, {"progress": 0, "state": {"job_count": 0}}, 0)
        server.routes[("GET", "/sdapi/v1/sd-models")] = (200, [], 0)
        server.routes[("GET", "/sdapi/v1/options")] = (200, {"sd_model_checkpoint": None}, 0)
        checks = check_a1111(server.url, auth="")
    assert checks[1].status == FAIL and "no checkpoint" in checks[1].message
    assert "models/Stable-diffusion" in checks[1].fix


def test_nothing_listening_names_the_flag():
    (check,) = check_a1111(free_url(), auth="")
    assert check.status == FAIL and "cannot connect" in check.message and "--api" in check.fix


def test_port_7861_and_localhost_mixups(monkeypatch):
    monkeypatch.setattr(doctor, "_answers", lambda url, auth=None: url.endswith(":7861"))
    with socket.socket() as probe:
        free_7860 = probe.connect_ex(("127.0.0.1", 7860)) != 0
    if not free_7860:
        pytest.skip("something listens on 7860 here")
    (check,) = check_a1111("http://127.0.0.1:7860", auth="")
    assert "7861" in check.message and "SD_URL=http://127.0.0.1:7861" in check.fix
    monkeypatch.setattr(doctor, "_answers", lambda url, auth=None: "127.0.0.1" in url)
    (check,) = check_a1111(free_url().replace("127.0.0.1", "localhost"), auth="")
    assert "IPv6" in check.fix and "127.0.0.1" in check.fix


def test_llm_check(llm_server, monkeypatch):
    monkeypatch.setenv("LLM_BASE_URL", llm_server.base_url)
    monkeypatch.delenv("LLM_MODEL", raising=False)
    assert check_llm().status == OK
    monkeypatch.setenv("LLM_MODEL", "nope")
    check = check_llm()
    assert check.status == FAIL and "test-model" in check.fix
    monkeypatch.setenv("LLM_BASE_URL", free_url() + "/v1")
    check = check_llm()
    assert check.status == WARN and "fall back" in check.message


@pytest.mark.subprocess
def test_packages_and_the_command_line(monkeypatch):
    assert check_packages().status == OK
    assert all(c.status != FAIL for c in run_checks(include_a1111=False, include_llm=False))
    ok = subprocess.run([sys.executable, "-m", "course", "doctor", "--no-a1111", "--no-llm"], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and "checks passed" in ok.stdout
    env = {"SD_URL": free_url(), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    failed = subprocess.run([sys.executable, "-m", "helpers", "doctor", "--no-llm"], capture_output=True, text=True,
                            timeout=120, env=env)
    assert failed.returncode == 1 and "fix:" in failed.stdout
