"""Settings for the kit: every backend address, password and timeout, so notebooks never hard-code them.

Environment variables win over a ``.env`` file in the current folder or a parent (so ``notebooks/`` finds it).

    >>> s = load_settings(env={"SD_AUTH": "ann:hunter2"}, dotenv=False)
    >>> s.sd_url, s.sd_auth        # the password never shows
    ('http://127.0.0.1:7860', Secret('ann:********'))
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

from .errors import KitError

KIT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_API_KEY = "not-needed"  # sent to local LLM servers, which do not check it
ENGINE_CHOICES = ("auto", "preview", "diffusers")
# Values local LLM servers' docs tell students to pass as the key: not secrets, and masking "ollama" would
# garble the fix texts that name Ollama's commands.
PLACEHOLDER_KEYS = frozenset({LOCAL_API_KEY, "lm-studio", "ollama", "empty", "sk-no-key-required", "no-key", "none",
                              "dummy"})
MASK = "********"
SHORT_SECRET = 4  # a secret shorter than this is masked as a whole word only: every "a" of "a" would garble text
# scheme://user:password@ ; the password runs to the last "@" before the path, as urlsplit reads it
URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.\-]*://[^/?#:@]*):[^/?#]*@(?=[^/?#@]*(?:[/?#]|$))", re.IGNORECASE)


class SettingsError(KitError, ValueError):
    """A setting has a value the kit cannot use; the message names the variable and the fix."""


class Secret:
    """A string that hides itself in reprs, logs and notebook outputs; :meth:`reveal` gives the value.

    >>> key = Secret("sk-123")
    >>> key, str(key), key.reveal()
    (Secret('********'), '********', 'sk-123')
    """

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:  # the user name of "user:password" is not secret
        user, sep, _ = self._value.partition(":")
        return f"{user}:********" if sep else "********"

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"

    def __bool__(self) -> bool:
        return bool(self._value)


def credentials(auth: Secret | str | None = None, urls: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(user, password) of ``auth`` ("user:password") and of each URL that holds one, URL-decoded as sent.

    >>> credentials(Secret("ann:pw"), ["http://bob:p%40ss@gpu:7860", "http://127.0.0.1:1234/v1"])
    [('ann', 'pw'), ('bob', 'p@ss')]
    """
    found = []
    if auth:
        user, _, password = (auth.reveal() if isinstance(auth, Secret) else str(auth)).partition(":")
        found.append((user, password))
    for url in urls:
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. a bad IPv6 address: no password can be read out of it either
            continue
        if parts.password:
            found.append((unquote(parts.username or ""), unquote(parts.password)))
    return [(user, password) for user, password in found if password]


def secret_forms(key: Secret | str | None = None, auth: Secret | str | None = None,
                 urls: Iterable[str] = ()) -> list[str]:
    """The texts that reveal a secret, longest first: ``key`` (unless a local server's placeholder), and each
    password of ``auth`` and ``urls`` as sent, as written in the URL (``p%40ss``) and inside HTTP Basic's
    header (base64 of ``user:password``), which a server may echo too.

    >>> secret_forms(key="sk-abc123", auth="ann:pw")
    ['sk-abc123', 'YW5uOnB3', 'pw']
    """
    found = set()
    key = key.reveal() if isinstance(key, Secret) else key
    if key and key.lower() not in PLACEHOLDER_KEYS:
        found.add(key)
    for user, password in credentials(auth, urls):
        found |= {password, quote(password, safe=""), base64.b64encode(f"{user}:{password}".encode()).decode()}
    return sorted(found, key=lambda text: (-len(text), text))


def masked_url(url: str) -> str:
    """The URL with its password (not its user) shown as ******** (a pattern: urlsplit may raise, a repr must not).

    >>> masked_url("http://ann:pw@gpu-server:7860"), masked_url("http://127.0.0.1:1234/v1")
    ('http://ann:********@gpu-server:7860', 'http://127.0.0.1:1234/v1')
    """
    return URL_PASSWORD.sub(rf"\1:{MASK}@", url, count=1)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ********; one shorter than 4 characters only where it
    stands as a word of its own.

    >>> mask("401 for ann:pw (YW5uOnB3); pwd stays", secret_forms(auth="ann:pw"))
    '401 for ann:******** (********); pwd stays'
    """
    text = str(text)
    for secret in sorted(set(secrets), key=len, reverse=True):  # longest first: a key may contain a password
        if len(secret) >= SHORT_SECRET:
            text = text.replace(secret, MASK)
        elif secret:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, text)
    return text


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    fix = f"set it in your environment or .env, e.g. {name}={default:g}"
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number of seconds.", fix) from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be greater than 0 seconds.", fix)
    return value


@dataclass(frozen=True)
class Settings:
    """All settings of the kit. Build one with :func:`load_settings`."""

    sd_url: str = "http://127.0.0.1:7860"
    sd_auth: Secret | None = None
    sd_timeout: float = 600.0  # read timeout: a real generation on a slow GPU takes minutes
    sd_connect_timeout: float = 5.0  # a server that is not there should fail fast
    sd_engine: str = "auto"  # the engine of the kit's own server: "auto", "preview" or "diffusers"
    sd_model: str | None = None  # the diffusers engine's model (None: stabilityai/sd-turbo)
    sd_lora_dir: str | None = None  # the kit's server's LoRA folder (None: data/loras, the kit's demo LoRA)
    output_dir: Path = KIT_ROOT / "outputs"
    llm_base_url: str = "http://127.0.0.1:1234/v1"  # LM Studio's default server address
    llm_model: str | None = None  # None: the first model the server lists
    llm_vision_model: str | None = None  # the model that looks at images (None: llm_model)
    llm_embed_model: str | None = None  # the model behind /v1/embeddings (None: no embeddings)
    # Local servers ignore the key, but the openai package refuses an empty one.
    llm_api_key: Secret = field(default_factory=lambda: Secret(LOCAL_API_KEY))
    llm_timeout: float = 120.0
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"  # an open_clip tag, or a path to a checkpoint file
    clip_device: str | None = None  # None: cuda, then mps, then cpu

    def __repr__(self) -> str:  # the dataclass's own repr would show the passwords written in the URLs
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown.update(sd_url=masked_url(self.sd_url), llm_base_url=masked_url(self.llm_base_url))
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    def secrets(self) -> list[str]:
        """Every text to hide: LLM_API_KEY and each password (SD_AUTH's, those written in SD_URL and
        LLM_BASE_URL) in each form a server or a file may show it (see :func:`secret_forms`).

        >>> load_settings(env={"SD_URL": "http://ann:pw99@gpu:7860"}, dotenv=False).secrets()
        ['YW5uOnB3OTk=', 'pw99']
        """
        return secret_forms(key=self.llm_api_key, auth=self.sd_auth, urls=(self.sd_url, self.llm_base_url))


def _read_dotenv(dotenv: bool | str | Path) -> dict[str, str]:
    if dotenv is False:
        return {}
    from dotenv import dotenv_values, find_dotenv

    # Not found from the current folder: the kit's own .env.
    path = Path(find_dotenv(usecwd=True) or KIT_ROOT / ".env") if dotenv is True else Path(dotenv)
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(env: Mapping[str, str] | None = None, dotenv: bool | str | Path = True) -> Settings:
    """Read the settings: ``env`` (default ``os.environ``) over ``.env`` over the defaults.

    >>> load_settings(env={"SD_URL": "http://gpu-server:7860/"}, dotenv=False).sd_url
    'http://gpu-server:7860'
    """
    merged = {**_read_dotenv(dotenv), **(os.environ if env is None else env)}

    def read(name: str) -> str:
        return merged.get(name, "").strip()

    def url(name: str, default: str) -> str:
        value = read(name) or default
        if "://" not in value:
            raise SettingsError(f"{name}={value!r} needs a scheme.", f"use e.g. {name}=http://{value}")
        return value.rstrip("/")

    defaults = Settings()
    auth = read("SD_AUTH")
    if auth and ":" not in auth:
        raise SettingsError("SD_AUTH must look like user:password.",
                            "use the same text as A1111's --api-auth, e.g. SD_AUTH=student:secret")
    engine = read("SD_ENGINE").lower() or defaults.sd_engine
    if engine not in ENGINE_CHOICES:
        raise SettingsError(f"SD_ENGINE={engine!r} is not one of {', '.join(ENGINE_CHOICES)}.",
                            "use e.g. SD_ENGINE=auto")
    return Settings(
        sd_url=url("SD_URL", defaults.sd_url),
        sd_auth=Secret(auth) if auth else None,
        sd_timeout=_seconds(merged, "SD_TIMEOUT", defaults.sd_timeout),
        sd_connect_timeout=_seconds(merged, "SD_CONNECT_TIMEOUT", defaults.sd_connect_timeout),
        sd_engine=engine,
        sd_model=read("SD_MODEL") or None,
        sd_lora_dir=read("SD_LORA_DIR") or None,
        # Relative to the kit's root, so notebooks (run in notebooks/) and the command line share outputs/
        # (an absolute path replaces KIT_ROOT).
        output_dir=KIT_ROOT / Path(read("OUTPUT_DIR")).expanduser() if read("OUTPUT_DIR") else defaults.output_dir,
        llm_base_url=url("LLM_BASE_URL", defaults.llm_base_url),
        llm_model=read("LLM_MODEL") or None,
        llm_vision_model=read("LLM_VISION_MODEL") or None,
        llm_embed_model=read("LLM_EMBED_MODEL") or None,
        # OPENAI_API_KEY is honoured so that pointing LLM_BASE_URL at OpenAI needs no second variable.
        llm_api_key=Secret(read("LLM_API_KEY") or read("OPENAI_API_KEY") or LOCAL_API_KEY),
        llm_timeout=_seconds(merged, "LLM_TIMEOUT", defaults.llm_timeout),
        clip_model=read("CLIP_MODEL") or defaults.clip_model,
        clip_pretrained=read("CLIP_PRETRAINED") or defaults.clip_pretrained,
        clip_device=read("CLIP_DEVICE") or None,
    )


def configured_secrets() -> list[str]:
    """The secrets of the current settings (:meth:`Settings.secrets`) for a last mask before text is written
    or printed; [] when the settings cannot be read, as then no client could have used them."""
    try:
        return load_settings().secrets()
    except SettingsError:
        return []
