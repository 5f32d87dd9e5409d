"""What went wrong on the way to an upstream, in words a log line and an error body can carry
(never an exception's own message, which can quote a URL with credentials)."""

from __future__ import annotations

import errno
from typing import Final

import aiohttp
from yarl import URL

from .errors import BadGatewayError


def connection_failure(exc: BaseException) -> str:
    """What went wrong on the way to the upstream, in words (never the exception's message,
    which can quote a URL with credentials)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the upstream closed the connection before answering"
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(os_error, ConnectionResetError):
        return "connection reset"
    if isinstance(os_error, OSError) and os_error.errno in _UNREACHABLE:
        return "network unreachable"
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    return type(exc).__name__


_UNREACHABLE: Final = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN})


def redirect_error(status: int, url: URL, location: str | None) -> BadGatewayError:
    """A 3xx is an upstream error naming the status and both hosts; nothing is sent there."""
    target = "no Location"
    if location:
        try:
            loc = url.join(URL(location))
            target = f"{loc.host}:{loc.port}" if loc.host else "an unparsable Location"
        except ValueError:
            target = "an unparsable Location"
    shown = target[:200] if target.isprintable() else "an unprintable Location"
    return BadGatewayError(
        f"upstream {url.host}:{url.port} answered HTTP {status}, a redirect to {shown}; "
        "the gateway never follows upstream redirects (check upstreams.*.base_url)",
        upstream_status=status,
        should_retry=False,
    )
