"""``python -m gateway.mock_upstream [--host H] [--port P] [--api-key K]``."""

from __future__ import annotations

from .server import main

if __name__ == "__main__":
    main()
