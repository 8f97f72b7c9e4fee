"""Preflight checks: is everything the notebooks need in place? Each failure names its fix.

Run it from a terminal with ``make doctor`` (or ``python -m course doctor``), or in a notebook:

    >>> from course.doctor import doctor
    >>> doctor()                         # doctest: +SKIP
    ok    Python 3.11.7
    ok    packages: requests 2.32.3, pillow 11.0.0, ...
    FAIL  A1111 at http://127.0.0.1:7860: cannot connect
          fix: Start A1111 with the --api flag ...
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from helpers.config import KIT_ROOT, configured_secrets, load_settings, mask, masked_url
from helpers.urls import localhost_hint, with_host

OK, WARN, FAIL = "ok", "warn", "FAIL"

# distribution name -> what it is for; each must be installed for the notebooks of this step.
REQUIRED = {
    "requests": "HTTP calls to A1111",
    "pillow": "images",
    "tqdm": "progress bars",
    "python-dotenv": ".env settings",
    "fastapi": "the kit's A1111-compatible server",
    "uvicorn": "the kit's A1111-compatible server",
    "ipywidgets": "interactive widgets",
    "matplotlib": "image grids and charts",
    "openai": "LLM servers (LM Studio, Ollama, ...)",
    "rank-bm25": "corpus retrieval",
    "open_clip_torch": "CLIP token counts and image-text scores",
    "torch": "CLIP",
}


@dataclass
class Check:
    """One line of the report: ``status`` is "ok", "warn" or "FAIL"; ``fix`` says what to do."""

    name: str
    status: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"{self.status:<5} {self.name}: {self.message}"
        return line + (f"\n      fix: {self.fix}" if self.fix else "")


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 10):
        return Check("Python", FAIL, f"{version} is too old", "Use Python 3.11: run `make setup` (it creates .venv).")
    return Check("Python", OK, f"{version} ({sys.executable})")


def check_packages() -> Check:
    found, missing = [], []
    for name in REQUIRED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check("packages", FAIL, "missing " + ", ".join(f"{m} ({REQUIRED[m]})" for m in missing),
                     "Run `make setup`, then restart the kernel.")
    return Check("packages", OK, ", ".join(found))


def check_interpreter() -> Check:
    venv = (KIT_ROOT / ".venv").resolve()
    prefix = Path(sys.prefix).resolve()
    if prefix == venv:
        return Check("interpreter", OK, "the kit's .venv")
    return Check("interpreter", WARN, f"running {sys.executable}, not the kit's .venv",
                 "Start JupyterLab with `make lab` (or choose the kernel of the kit's .venv / conda env) so the "
                 "notebooks use the packages the kit installed.")


def check_widgets() -> Check:
    try:
        import ipywidgets
    except ImportError:
        return Check("ipywidgets", FAIL, "not importable", "Run `make setup`, then restart the kernel.")
    try:
        metadata.version("jupyterlab_widgets")
    except metadata.PackageNotFoundError:
        return Check("ipywidgets", WARN, f"{ipywidgets.__version__}, but jupyterlab_widgets is missing, so widgets "
                     "show as text", "Run `make setup` and restart JupyterLab.")
    return Check("ipywidgets", OK, ipywidgets.__version__)


def _answers(url: str, auth=None) -> bool:
    from helpers.a1111 import A1111Client, A1111Error

    try:
        A1111Client(url, auth=auth or "", connect_timeout=2).request("GET", "progress", timeout=5)
        return True
    except A1111Error as err:
        return err.status is not None  # any HTTP answer means something listens there


def check_a1111(url: str | None = None, auth=None) -> list[Check]:
    """Check the A1111 server: reachable, API enabled, auth accepted, a model loaded."""
    from helpers.a1111 import A1111Client, A1111Error

    client = A1111Client(url, auth=auth)
    name = f"A1111 at {masked_url(client.base_url)}"  # the user shows, a password in SD_URL does not
    try:
        client.request("GET", "progress", timeout=10)
    except A1111Error as err:
        if err.status is None:  # nothing listens: look for the usual mix-ups before giving up
            parts = urlsplit(client.base_url)
            if parts.port == 7860 and _answers(with_host(client.base_url, port=7861), auth):
                return [Check(name, FAIL, "nothing listens on 7860, but a server answers on 7861",
                              "A1111 started with --nowebui uses port 7861: "
                              f"set SD_URL={with_host(client.base_url, port=7861)}")]
            if parts.hostname == "localhost" and _answers(with_host(client.base_url, host="127.0.0.1"), auth):
                return [Check(name, FAIL, "'localhost' does not reach the server but 127.0.0.1 does",
                              localhost_hint(client.base_url, "SD_URL"))]
            return [Check(name, FAIL, "cannot connect", err.fix)]
        if err.status == 404:
            return [Check(name, FAIL, "the server answers, but /sdapi/v1 is 404: the API is not enabled", err.fix)]
        if err.status == 401:
            return [Check(name, FAIL, "authentication " + ("rejected" if client._auth else "required"), err.fix)]
        return [Check(name, FAIL, str(err).split("\n")[0], err.fix)]

    checks = [Check(name, OK, "reachable, API enabled" + (", auth accepted" if client._auth else ""))]
    try:
        models = client.models()
        current = client.options().get("sd_model_checkpoint")
    except A1111Error as err:
        return checks + [Check("model", FAIL, str(err).split("\n")[0], err.fix)]
    if not models:
        checks.append(Check("model", FAIL, "the server lists no checkpoint",
                            "Put a .safetensors checkpoint into stable-diffusion-webui/models/Stable-diffusion "
                            "and call client.post('refresh-checkpoints') or restart A1111."))
    elif str(current).startswith("offline-preview"):
        checks.append(Check("model", WARN, "the kit's offline preview engine: images are PLACEHOLDERS",
                            "Fine for learning the API. For real images start A1111 with --api and set SD_URL, "
                            "or without A1111: `make models-sd` once while online, "
                            "then `make serve ENGINE=diffusers`."))
    else:
        from helpers.model_hints import hints_for

        hints = hints_for(str(current))
        advice = "" if hints.family == "sd" else (f"; a {hints.family} model: use {hints.steps_range[0]}-"
                                                  f"{hints.steps_range[1]} steps at CFG scale {hints.cfg_scale:g}")
        checks.append(Check("model", OK, f"{current} ({len(models)} available){advice}"))
    return checks


def check_llm() -> Check:
    """Check the LLM server at LLM_BASE_URL. Without one the kit still works (retrieval, baseline)."""
    from helpers.llm import LLM, LLMError

    llm = LLM(timeout=5, max_retries=0)
    name = f"LLM at {llm.base_url}"
    try:
        models = llm.models()
    except LLMError as err:
        return Check(name, WARN, str(err).split("\n")[0] + " The notebooks fall back to corpus retrieval and the "
                     "baseline prompt.", err.fix)
    if not models:
        return Check(name, WARN, "the server lists no models", "Load a model in LM Studio (or `ollama pull llama3.2`).")
    if llm._model and llm._model not in models:
        return Check(name, FAIL, f"LLM_MODEL={llm._model} is not on the server",
                     f"Set LLM_MODEL to one of: {', '.join(models)}.")
    return Check(name, OK, f"model {llm.model} ({len(models)} available)")


def run_checks(include_a1111: bool = True, include_llm: bool = True) -> list[Check]:
    """All checks as a list of :class:`Check` (nothing printed)."""
    checks = [check_python(), check_packages(), check_interpreter(), check_widgets()]
    if include_a1111:
        checks += check_a1111()
    if include_llm:
        checks.append(check_llm())
    return checks


def print_report(checks: list[Check]) -> bool:
    """Print checks and a summary line; returns True when none failed. No configured secret is printed, even
    when a server put one into its answer."""
    secrets = configured_secrets()
    for check in checks:
        print(mask(str(check), secrets))
    failed = [c for c in checks if c.status == FAIL]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed. Settings: {load_settings()!r}")
    return not failed


def doctor(include_a1111: bool = True, include_llm: bool = True) -> None:
    """Print the preflight report: one line per check, with the fix under each failure.

    >>> doctor(include_a1111=False, include_llm=False)   # doctest: +ELLIPSIS
    ok    Python: ...
    """
    print_report(run_checks(include_a1111, include_llm))
