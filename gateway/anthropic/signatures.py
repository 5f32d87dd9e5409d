"""Thinking signatures (protocol.md §9.10, issue 4): a versioned, HMAC-signed envelope of the
reasoning item a thinking block came from, verified by a key ring (issue 11)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any, Final

import orjson

SIGNATURE_PREFIX: Final = "gw1."


class Signer:
    """Mints and verifies the ``signature`` of thinking blocks we produce.

    Token: ``gw1.<b64url(json {"id": rs_id, "enc": encrypted_content})>.<b64url(hmac16)>``.
    Only tokens minted with this key decode; anything else (real Claude signatures, empty
    strings, edits) decodes to None and the block is dropped before the upstream.
    """

    __slots__ = ("_families", "_keys", "_seal_keys")

    def __init__(self, keys: bytes | Sequence[bytes]) -> None:
        """``keys``: one key, or a ring (newest first) for rotation across a fleet: tokens
        are signed with the first and verified with any, so a new key can be added first
        everywhere and the old one dropped once no client still holds its tokens."""
        ring = (keys,) if isinstance(keys, bytes) else tuple(keys)
        if not ring or any(len(k) < 16 for k in ring):
            raise ValueError("signing keys must be at least 16 bytes")
        self._keys = ring
        self._seal_keys = ring
        self._families: dict[str, Signer] = {}

    def for_family(self, family: str) -> Signer:
        """The signer of thinking signatures minted by one upstream (issue 16): its keys are
        derived from the ring and the family's name, so a signature from one upstream never
        verifies for another (a fallback target drops it cleanly, as a foreign signature)
        while :meth:`seal` tokens (file and batch ids, compaction) stay valid everywhere."""
        found = self._families.get(family)
        if found is None:
            found = Signer.__new__(Signer)
            label = b"gw-family\x00" + family.encode()
            found._keys = tuple(
                hmac.new(k, label, hashlib.sha256).digest() for k in self._seal_keys
            )
            found._seal_keys = self._seal_keys
            found._families = {}
            if len(self._families) < 1024:
                self._families[family] = found
        return found

    @staticmethod
    def _mac(key: bytes, payload: bytes) -> str:
        digest = hmac.new(key, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def encode(self, item_id: str, encrypted_content: str | None) -> str:
        payload = base64.urlsafe_b64encode(
            orjson.dumps({"id": item_id, "enc": encrypted_content})
        ).rstrip(b"=")
        return f"{SIGNATURE_PREFIX}{payload.decode()}.{self._mac(self._keys[0], payload)}"

    def decode(self, token: str) -> tuple[str, str | None] | None:
        """``(reasoning item id, encrypted_content)`` for a genuine token, else None."""
        if not token.startswith(SIGNATURE_PREFIX):
            return None
        body, _, mac = token[len(SIGNATURE_PREFIX) :].partition(".")
        if not mac:
            return None
        raw = body.encode()
        if not any(hmac.compare_digest(mac, self._mac(key, raw)) for key in self._keys):
            return None
        try:
            doc: Any = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            return None
        enc = doc.get("enc")
        return doc["id"], enc if isinstance(enc, str) else None

    def seal(self, prefix: str, value: Any) -> str:
        """An opaque, signed token of ``value`` (JSON) for the client to hand back later:
        ``<prefix><b64url(json)>.<b64url(hmac16 of prefix + payload)>``. The prefix is inside
        the MAC, so a token of one kind never verifies as another (nor as a thinking
        signature)."""
        payload = base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=")
        mac = self._mac(self._seal_keys[0], prefix.encode() + payload)
        return f"{prefix}{payload.decode()}.{mac}"

    def unseal(self, prefix: str, token: str) -> Any | None:
        """The value of a genuine :meth:`seal` token of this ``prefix``, else None."""
        if not token.startswith(prefix):
            return None
        body, _, mac = token[len(prefix) :].partition(".")
        signed = prefix.encode() + body.encode()
        if not mac or not any(
            hmac.compare_digest(mac, self._mac(key, signed)) for key in self._seal_keys
        ):
            return None
        try:
            return orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return None
