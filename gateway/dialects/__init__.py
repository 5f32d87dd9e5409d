"""The upstream wire dialects, one package each, and the registry the handlers read.

Adding a dialect is adding a folder with ``request.py``, ``response.py`` and ``stream.py``, a
``DIALECT`` in its ``__init__``, and one line below. Dialect packages are pure (no aiohttp, no
asyncio) and never import one another; what they share lives in :mod:`gateway.anthropic`
(tests/test_layout.py checks both).
"""

from __future__ import annotations

from typing import Final

from .base import Dialect, StreamTranslator
from .chat import DIALECT as CHAT
from .responses import DIALECT as RESPONSES

__all__ = ["DIALECTS", "Dialect", "StreamTranslator"]

DIALECTS: Final[dict[str, Dialect]] = {d.name: d for d in (RESPONSES, CHAT)}
