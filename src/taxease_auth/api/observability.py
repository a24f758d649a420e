"""Per-request observability: a request id, the HTTP metrics and a one-line access log.

A pure ASGI middleware, outermost of ours, so it times and counts every answer, including
the 413 of ``BodySizeLimit``:

- **Request id.** A valid incoming ``X-Request-ID`` (1 to 128 characters of ``A-Z a-z 0-9 .
  _ : -``, as a proxy or a client may set it) is kept, anything else is replaced by a fresh
  random one. It is stored in ``logs.REQUEST_ID`` for every line logged while the request is
  handled, and echoed in the answer's ``X-Request-ID`` header.
- **Metrics.** ``taxease_http_requests_total{route, status}`` and
  ``taxease_http_request_duration_seconds{route}``, labelled with the matched route's template
  (``/api/v1/auth/register``), never the raw path: the label set stays bounded whatever paths
  clients invent (unmatched paths share the label ``unmatched``).
- **Access log** (ACCESS_LOG, logger ``taxease_auth.access``): method, route template,
  status, duration in ms and the client address (behind TRUSTED_PROXIES, the forwarded one).
  Never the query string or a body, which may hold codes or tokens. It replaces uvicorn's
  access log, which logs the full path with its query string. Health checks and scrapes
  that succeed are logged at DEBUG so they do not drown the rest.

Per request this costs a header scan, a perf_counter pair, one closure, two cached metric
children and (with the access log) one log record: no other objects are built.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taxease_auth import metrics
from taxease_auth.api.client_ip import client_address
from taxease_auth.logs import REQUEST_ID

REQUEST_ID_HEADER = b"x-request-id"
UNMATCHED = "unmatched"
# Bounded and free of anything a log reader or a header could misread (no spaces, quotes,
# "=", control characters): UUIDs and hex ids pass.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# Operational routes polled by load balancers and Prometheus: logged at DEBUG when fine.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})

access_logger = logging.getLogger("taxease_auth.access")
# Request ids correlate log lines; they are not secrets, so not worth a system call each
# (secrets.token_hex reads the OS's random source: a tenth of the middleware's cost).
_ids = random.Random()  # noqa: S311 - correlation ids, not secrets

_Children = tuple[Counter, Histogram]  # labels() returns a child of the same class


class RequestObservability:
    def __init__(
        self, app: ASGIApp, *, trusted_proxies: Sequence[str] = (), access_log: bool = True
    ) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)
        self.access_log = access_log
        # (route template, status) -> the labelled metric children: labels() takes a lock and
        # checks its arguments on each call; the set of keys is bounded (routes x statuses).
        self._children: dict[tuple[str, int], _Children] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming: bytes | None = None
        forwarded_for: list[bytes] | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                incoming = value
            elif name == b"x-forwarded-for":
                # Every line, in order: client_ip.client_address reads them as one list of hops.
                if forwarded_for is None:
                    forwarded_for = [value]
                else:
                    forwarded_for.append(value)
        if incoming is not None and _VALID_REQUEST_ID.fullmatch(incoming):
            raw_id = incoming
            request_id = incoming.decode("ascii")
        else:
            request_id = f"{_ids.getrandbits(128):032x}"
            raw_id = request_id.encode("ascii")
        status = 500  # what the server answers if the application fails before answering

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, raw_id)]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            self._observe(scope, status, time.perf_counter() - started, forwarded_for)
        # Reset only after a normal return: when the application raised, the server logs the
        # error next, in this same task (uvicorn runs each request in its own), and that line
        # should carry the request id too.
        REQUEST_ID.reset(token)

    def _observe(
        self, scope: Scope, status: int, seconds: float, forwarded_for: list[bytes] | None
    ) -> None:
        route = scope.get("route")
        template: str = getattr(route, "path", UNMATCHED)
        children = self._children.get((template, status))
        if children is None:
            children = (
                metrics.HTTP_REQUESTS.labels(route=template, status=str(status)),
                metrics.HTTP_SECONDS.labels(route=template),
            )
            self._children[(template, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        if not self.access_log:
            return
        level = logging.DEBUG if template in _QUIET_ROUTES and status < 400 else logging.INFO
        if not access_logger.isEnabledFor(level):
            return
        peer = scope.get("client")
        client = client_address(
            peer[0] if peer else None,
            [line.decode("latin-1") for line in forwarded_for] if forwarded_for else (),
            self.trusted_proxies,
        )
        access_logger.log(
            level, "%s %s %d %.1fms %s", scope["method"], template, status, seconds * 1000, client
        )
