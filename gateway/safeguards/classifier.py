"""Answering Claude Code's auto-mode safety check (issue 13): one classifier call per answer.

When a request carries ``safeguards`` (``dangerous_tool_use``) and the answer has tool calls,
all of them are judged in one upstream request to the classifier route, while nothing else
waits: a streamed answer's text and tool deltas have already gone out, only its final
``message_delta`` waits, for at most ``safeguards.timeout`` seconds. Whatever goes wrong (a
timeout, an upstream error, an answer that is not the JSON asked for) gives the calls the
verdict ``unavailable`` and a warning line, never an approval nobody made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ..context import RequestContext
from ..dialects import DIALECTS
from ..encoding import encode_json
from ..errors import GatewayError, InvalidRequestError
from ..failover.chain import Prepared, Resilience
from ..lifecycle import Lifecycle
from ..logs import log_event
from ..metrics import Metrics
from ..routing import Router
from ..schemas.anthropic import Message, MessagesRequest
from ..schemas.anthropic_out import MessageResponse, OutToolUse
from ..settings import Route, Settings
from ..tracing import end_classifier, start_classifier
from .prompt import answer_text, classifier_input, classifier_payload
from .verdicts import (
    SAFEGUARD_TYPE,
    ToolCall,
    all_not_judged,
    available,
    count,
    not_judged,
    parse_answer,
    unavailable_status,
)


@dataclass(frozen=True, slots=True)
class Case:
    """One request that asked for verdicts: what the classifier will be shown."""

    enabled: bool
    route: Route
    messages: Sequence[Message]
    context: dict[str, Any] | None


class Safeguards:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        resilience: Resilience,
        metrics: Metrics,
        lifecycle: Lifecycle,
        prompt: str,
    ) -> None:
        self.settings = settings.safeguards
        self.small_model = settings.models.small
        self.router = router
        #: the app's fallback chains (issue 16): the classifier falls back with its route
        self.resilience = resilience
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.prompt = prompt
        self._routes: dict[str, Route] = {}

    def case(self, req: MessagesRequest, route: Route) -> Case | None:
        """The request's check, or None when it asked for none."""
        for entry in req.safeguards or ():
            if entry.type == SAFEGUARD_TYPE:
                enabled = self.settings.enabled and route.safeguards
                return Case(enabled, route, req.messages, entry.classifier_context)
        return None

    def classifier_route(self, route: Route) -> Route:
        """``safeguards.model`` routed like a client model, else the request's upstream with
        the small model."""
        cached = self._routes.get(route.name)
        if cached is None:
            if self.settings.model:
                cached = self.router.resolve(self.settings.model)
            else:
                upstream_name = route.name.partition(":")[0]
                cached = msgspec.structs.replace(
                    route,
                    name=f"{upstream_name}:{self.small_model}",
                    upstream_model=self.small_model,
                    max_output_tokens=None,
                )
            self._routes[route.name] = cached
        return cached

    async def for_message(
        self, case: Case, message: MessageResponse, ctx: RequestContext
    ) -> list[dict[str, Any]]:
        """Verdicts for a non-streamed answer's tool calls."""
        calls = [
            ToolCall(b.id, b.name, b.input) for b in message.content if isinstance(b, OutToolUse)
        ]
        return await self.results(case, calls, [], message.stop_reason, ctx)

    async def results(
        self,
        case: Case,
        calls: list[ToolCall],
        broken: list[str],
        stop_reason: str | None,
        ctx: RequestContext,
    ) -> list[dict[str, Any]]:
        """``safeguard_results`` for an answer's calls (``broken``: ids whose input did not
        arrive whole). Never raises: a failure is a verdict of ``unavailable``."""
        if not case.enabled:
            self.metrics.observe_safeguards({"disabled": 1}, None)
            return unavailable_status("disabled")
        verdicts: dict[str, dict[str, Any]] = {i: not_judged("truncated") for i in broken}
        if calls and stop_reason == "max_tokens":
            # The last call was cut by the output limit: nobody judges half an action.
            verdicts[calls[-1].id] = not_judged("truncated")
            calls = calls[:-1]
        seconds: float | None = None
        if calls:
            started = time.perf_counter()
            verdicts.update(await self._judge(case, calls, ctx))
            seconds = time.perf_counter() - started
        counts = count(verdicts)
        self.metrics.observe_safeguards(counts, seconds)
        if any(k.startswith("unavailable") for k in counts):
            log_event(
                "safeguard_unavailable",
                logging.WARNING,
                count=len(verdicts),
                reason=",".join(sorted(k for k in counts if k.startswith("unavailable"))),
            )
        return available(verdicts)

    async def _judge(
        self, case: Case, calls: list[ToolCall], ctx: RequestContext
    ) -> dict[str, dict[str, Any]]:
        sub = RequestContext(ctx.cid, ctx.request_id)  # the request's own summary stays intact
        sub.span = start_classifier(ctx, len(calls))  # a child span, when the request is traced
        verdicts = None
        try:
            verdicts = await self._ask(case, calls, sub)
        finally:
            end_classifier(sub.span, verdicts)
        return verdicts

    async def _ask(
        self, case: Case, calls: list[ToolCall], sub: RequestContext
    ) -> dict[str, dict[str, Any]]:
        route = self.classifier_route(case.route)
        text = classifier_input(case.messages, case.context, calls, self.settings.max_context_chars)
        life = self.lifecycle

        def build(target: Route) -> Prepared:  # the route's fallbacks judge when it cannot
            payload = classifier_payload(target, self.prompt, text)
            return Prepared(DIALECTS[target.dialect].path, encode_json(payload))

        try:
            # a shutdown ends the wait too: verdicts "unavailable"
            async with life.wait(asyncio.get_running_loop().time() + self.settings.timeout):
                opened = await self.resilience.open(route, build, sub, stream=False)
                opened.release()
                answer = opened.data or b""
        except TimeoutError:
            return all_not_judged(calls, "timeout")
        except InvalidRequestError as exc:
            reason = "input_too_long" if exc.message.startswith("prompt is too long") else "error"
            return all_not_judged(calls, reason)
        except GatewayError:
            return all_not_judged(calls, "error")
        parsed = parse_answer(answer_text(answer), calls)
        return parsed if parsed is not None else all_not_judged(calls, "error")
