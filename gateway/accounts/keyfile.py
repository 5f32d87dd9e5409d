"""The named keys file (issue 17 item 1): JSON, one entry per client key, holding the key's
SHA-256 (never the key), the client models it may use, and its limits.

``python -m gateway keys add NAME`` makes a key, prints it once and stores its hash; the file
is rewritten atomically (a temporary file renamed over it), so a gateway reloading it never
reads half a file. Keys are 256-bit random tokens: a plain SHA-256 is enough to keep them
(nothing to brute-force), and it keeps the per-request check to one hash and a dict lookup.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

KEY_PREFIX: Final = "sk-gw-"
HASH_PREFIX: Final = "sha256:"
_HASH_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

#: names the logs and metrics use for keys that are not named ones
RESERVED: Final = frozenset({"anonymous", "unauthenticated", "other"})

PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class KeyFileError(ValueError):
    """A keys file that cannot be used; ``str(err)`` names the file and the problem."""


class Limits(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Per-key limits; each is off when absent. Tokens are input (uncached) + cache writes +
    output, as Anthropic counts its rate limits (cache reads are not counted); cost is in
    the price table's currency (``[prices]``)."""

    #: requests per minute (sliding window)
    rpm: PositiveInt | None = None
    #: tokens per minute (sliding window; an estimate until the answer's usage is known)
    tpm: PositiveInt | None = None
    #: requests at once
    concurrent: PositiveInt | None = None
    daily_tokens: PositiveInt | None = None
    monthly_tokens: PositiveInt | None = None
    daily_cost: PositiveFloat | None = None
    monthly_cost: PositiveFloat | None = None


class KeyEntry(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    #: ``sha256:<hex>`` of the key
    hash: str
    #: client model names (exact or globs, as ``[[routes]] match``) it may use; [] = any
    models: list[str] = []
    #: may open /dashboard and the admin endpoints
    admin: bool = False
    #: revoked: the key stops working at the next reload
    disabled: bool = False
    limits: Limits = msgspec.field(default_factory=Limits)
    #: when it was made (ISO 8601, for people)
    created: str = ""


class KeyFile(Struct, kw_only=True, forbid_unknown_fields=True):
    keys: list[KeyEntry] = []


_DECODER: Final = msgspec.json.Decoder(KeyFile)
_ENCODER: Final = msgspec.json.Encoder()


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse(data: bytes, where: str) -> KeyFile:
    """The file's entries, checked: names and hashes well-formed and unique."""
    try:
        doc = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise KeyFileError(f"keys file {where}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise KeyFileError(f"keys file {where}: not JSON ({exc})") from None
    names: set[str] = set()
    hashes: set[str] = set()
    for i, entry in enumerate(doc.keys):
        at = f"keys file {where}: keys[{i}]"
        if not _NAME_RE.match(entry.name):
            raise KeyFileError(f"{at}.name {entry.name!r}: letters, digits, . _ @ - (≤ 64)")
        if entry.name in RESERVED:
            raise KeyFileError(f"{at}.name {entry.name!r} is reserved (logs and metrics use it)")
        if not _HASH_RE.match(entry.hash):
            raise KeyFileError(f"{at}.hash: expected sha256: and 64 hex digits")
        if entry.name in names:
            raise KeyFileError(f"{at}.name {entry.name!r} is used twice")
        if entry.hash in hashes:
            raise KeyFileError(f"{at}.hash is the same key as an earlier entry")
        names.add(entry.name)
        hashes.add(entry.hash)
    return doc


def load(path: str | Path) -> KeyFile:
    """The keys file at ``path``; a file that does not exist yet holds no keys."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return KeyFile()
    except OSError as exc:
        raise KeyFileError(f"keys file {p}: cannot be read: {exc.strerror or exc}") from None
    return parse(data, str(p)) if data.strip() else KeyFile()


def save(path: str | Path, doc: KeyFile) -> None:
    """Write ``doc`` to ``path`` atomically, readable by its owner only."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(msgspec.json.format(_ENCODER.encode(doc), indent=2) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name)) and name not in RESERVED
