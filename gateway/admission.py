"""Who gets in: requests receiving their body, then requests in flight (issue 10 item 3)."""

from __future__ import annotations

from typing import Any

from .context import ADMITTED, NOT_COUNTED, RECEIVING, RequestContext
from .errors import OverloadedError


class InFlight:
    """Admission for /v1/messages* (the overload guard; read by metrics and shutdown).

    A request is *receiving* until its whole body is in, then *admitted* (``value``): a slot
    is taken only once there is a complete request to work on, so bodies still trickling in
    never starve complete requests of slots (issue 10 item 3). Both counts have their own limit
    (0 = none); beyond either, 529 overloaded_error + retry-after.
    """

    __slots__ = ("gauge", "limit", "receiving", "receiving_limit", "value")

    def __init__(self, limit: int, receiving_limit: int = 0) -> None:
        self.limit = limit
        self.value = 0
        self.receiving_limit = receiving_limit
        self.receiving = 0
        #: a multiprocess gauge moved with ``value`` (``--workers``); None: read by callback
        self.gauge: Any = None

    @property
    def active(self) -> int:
        return self.value + self.receiving

    def start(self, ctx: RequestContext) -> None:
        """A request arrived; its body has yet to be read."""
        if self.receiving_limit and self.receiving >= self.receiving_limit:
            raise OverloadedError(
                "the gateway is receiving too many request bodies at once",
                headers={"retry-after": "1"},
            )
        self.receiving += 1
        ctx.stage = RECEIVING

    def admit(self, ctx: RequestContext) -> None:
        """The body is in: take an in-flight slot (or refuse with 529)."""
        if ctx.stage == RECEIVING:
            self.receiving -= 1
            ctx.stage = NOT_COUNTED
        if self.limit and self.value >= self.limit:
            raise OverloadedError(
                "the gateway is at its in-flight request limit", headers={"retry-after": "1"}
            )
        self.value += 1
        ctx.stage = ADMITTED
        if self.gauge is not None:
            self.gauge.inc()

    def release(self, ctx: RequestContext) -> None:
        stage = ctx.stage
        if stage == ADMITTED:
            self.value -= 1
            if self.gauge is not None:
                self.gauge.dec()
        elif stage == RECEIVING:
            self.receiving -= 1
        ctx.stage = NOT_COUNTED
