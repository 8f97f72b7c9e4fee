"""Server addresses for the A1111 client, the LLM wrapper and the preflight checks: hide a password,
change the host or port, and explain the "localhost is IPv6" trap the same way everywhere."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def without_password(url: str) -> str:
    """The URL without ``user:password@`` (an IPv6 host keeps its brackets), for messages and records.

    >>> without_password("http://ann:pw@[::1]:7860/sdapi")
    'http://[::1]:7860/sdapi'
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def with_host(url: str, host: str | None = None, port: int | None = None) -> str:
    """The URL with another host and/or port (the path stays; a missing port stays missing).

    >>> with_host("http://localhost:1234/v1", host="127.0.0.1"), with_host("http://[::1]:7860", port=7861)
    ('http://127.0.0.1:1234/v1', 'http://[::1]:7861')
    """
    parts = urlsplit(url)
    host = host or parts.hostname or ""
    if ":" in host:  # an IPv6 address is written in brackets
        host = f"[{host}]"
    port = port or parts.port
    return urlunsplit(parts._replace(netloc=f"{host}:{port}" if port else host))


def localhost_hint(url: str, setting: str) -> str:
    """The fix when ``localhost`` (or ``::1``) misses a server that listens on IPv4 only.

    >>> localhost_hint("http://localhost:7860", "SD_URL")
    "'localhost' may resolve to IPv6 (::1) while the server listens on IPv4: set SD_URL=http://127.0.0.1:7860"
    """
    return (f"'localhost' may resolve to IPv6 (::1) while the server listens on IPv4: set "
            f"{setting}={with_host(url, host='127.0.0.1')}")
