"""A fault-injecting HTTP proxy in front of moto's server: what moto never does, on the wire.

boto3 is pointed at the proxy (``AWS_ENDPOINT_URL``); the proxy forwards to moto and, on
request, adds latency, answers SES's errors in the sesv2 wire format (rest-json: the error code
in ``x-amzn-ErrorType``, ``{"message": ...}`` as the body), drops connections, or throttles
sends beyond a configured rate with 429 ``TooManyRequestsException`` as SES does. Faults apply
to sends (``POST /v2/email/outbound-emails``); other calls are forwarded unless a canned answer
is set for them.

It runs an asyncio server in a thread of its own, so sync (boto3 threads) and async callers
can use it alike; the knobs may be turned from any thread while it runs. Run as a module it
serves until killed, for the benchmark (``python -m tests.support.fault_proxy --help``), with
``GET /_proxy/stats`` giving what it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SEND_PATH = "/v2/email/outbound-emails"
# SES counts sends per second; the proxy enforces its max_rate over this sliding window.
RATE_WINDOW_SECONDS = 1.0

_REASONS = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}  # fmt: skip


@dataclass(frozen=True)
class Fault:
    """An error answer in SES v2's wire format."""

    status: int
    error_type: str | None
    message: str

    def response(self) -> bytes:
        body = json.dumps({"message": self.message}).encode()
        headers = {"Content-Type": "application/json", "x-amzn-RequestId": str(uuid.uuid4())}
        if self.error_type is not None:
            headers["x-amzn-ErrorType"] = self.error_type
        return _response(self.status, headers, body)


THROTTLED = Fault(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
INTERNAL_ERROR = Fault(500, "InternalFailure", "An internal error occurred.")
UNAVAILABLE = Fault(503, "ServiceUnavailable", "Service is unavailable.")
SENDING_PAUSED = Fault(400, "SendingPausedException", "Sending is paused for this account.")
BAD_REQUEST = Fault(400, "BadRequestException", "Invalid request.")


def recipient_not_verified(recipient: str) -> Fault:
    """The sandbox's answer for an unverified recipient: permanent for that message only."""
    return Fault(
        400,
        "MessageRejected",
        "Email address is not verified. The following identities failed the check in region "
        f"CA-CENTRAL-1: {recipient}",
    )


class Drop:
    """Close the connection without an answer. ``forward`` first passes the request on to moto
    (which accepts the mail): the client cannot tell whether it went."""

    def __init__(self, *, forward: bool = False) -> None:
        self.forward = forward

    def __repr__(self) -> str:
        return f"Drop(forward={self.forward})"


DROP = Drop()
FORWARD_THEN_DROP = Drop(forward=True)

Action = Fault | Drop


@dataclass
class SendRecord:
    """One send request as the proxy saw it. ``at`` is ``time.time()`` at arrival, ``answered``
    when its answer left (None: dropped, or not yet); ``outcome`` is "forwarded", "throttled"
    (over max_rate), "dropped", or the fault's error type."""

    at: float
    recipient: str | None
    outcome: str
    answered: float | None = None


@dataclass
class _State:
    latency: float = 0.0
    max_rate: float | None = None
    always: Action | None = None
    queued: collections.deque[Action] = field(default_factory=collections.deque)
    canned: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)
    sends: list[SendRecord] = field(default_factory=list)
    accepted_at: collections.deque[float] = field(default_factory=collections.deque)


class FaultProxy:
    """``with FaultProxy(upstream) as proxy:`` point boto3 at ``proxy.endpoint``."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._bind = (host, port)
        self._state = _State()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.endpoint = ""

    # --- life ------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, *self._bind), loop
        ).result(timeout=5)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shut() -> None:
            server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()
        self._loop = self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- knobs -------------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every request by ``seconds`` before it is answered (SES's round trip)."""
        with self._lock:
            self._state.latency = seconds

    def set_max_rate(self, per_second: float | None) -> None:
        """Answer 429 TooManyRequestsException to a send when ``per_second`` sends were
        already accepted in the last second (None: no limit)."""
        with self._lock:
            self._state.max_rate = per_second

    def fail_sends(self, action: Action | None) -> None:
        """Answer every send with ``action`` until called again with None."""
        with self._lock:
            self._state.always = action

    def fail_next(self, count: int, action: Action) -> None:
        """Answer the next ``count`` sends with ``action`` (before any ``fail_sends``)."""
        with self._lock:
            self._state.queued.extend([action] * count)

    def answer(self, method: str, path: str, status: int, body: dict[str, Any]) -> None:
        """Answer ``method path`` (not a send) with this JSON instead of forwarding it."""
        with self._lock:
            self._state.canned[(method, path)] = (status, body)

    def heal(self) -> None:
        """No more faults (latency and max_rate stay)."""
        with self._lock:
            self._state.always = None
            self._state.queued.clear()

    # --- what it saw -------------------------------------------------------------------------

    def sends(self) -> list[SendRecord]:
        with self._lock:
            return [dataclasses.replace(record) for record in self._state.sends]

    def count(self, outcome: str | None = None) -> int:
        return sum(1 for s in self.sends() if outcome is None or s.outcome == outcome)

    def stats(self) -> dict[str, Any]:
        sends = self.sends()
        outcomes = collections.Counter(s.outcome for s in sends)
        return {
            "sends": len(sends),
            "outcomes": dict(outcomes),
            "forwarded": [{"at": s.at, "answered": s.answered, "recipient": s.recipient}
                          for s in sends if s.outcome == "forwarded"],
        }  # fmt: skip

    # --- serving -----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                answer, record = await self._handle(*request)
                if answer is None:  # dropped
                    break
                writer.write(answer)
                await writer.drain()
                if record is not None:
                    with self._lock:
                        record.answered = time.time()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # stop(): end quietly (the server's callback would report a cancelled handler).
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _handle(
        self, head: bytes, headers: dict[str, str], body: bytes
    ) -> tuple[bytes | None, SendRecord | None]:
        """The answer (None: drop the connection) and the send's record, if it is a send."""
        record_to: list[SendRecord] = []
        answer = await self._answer(head, headers, body, record_to)
        return answer, (record_to[0] if record_to else None)

    async def _answer(
        self, head: bytes, headers: dict[str, str], body: bytes, record_to: list[SendRecord]
    ) -> bytes | None:
        method, target = head.split(b" ")[:2]
        path = target.decode().split("?")[0]
        if path == "/_proxy/stats":
            return _response(200, {"Content-Type": "application/json"},
                             json.dumps(self.stats()).encode())  # fmt: skip
        is_send = method == b"POST" and path == SEND_PATH
        arrived = time.time()
        action: Action | None = None
        throttled = False
        with self._lock:
            latency = self._state.latency
            canned = self._state.canned.get((method.decode(), path))
            if is_send:
                if self._state.queued:
                    action = self._state.queued.popleft()
                elif self._state.always is not None:
                    action = self._state.always
                elif self._state.max_rate is not None:
                    window = self._state.accepted_at
                    while window and window[0] <= arrived - RATE_WINDOW_SECONDS:
                        window.popleft()
                    if len(window) >= self._state.max_rate:
                        throttled = True
                    else:
                        window.append(arrived)
                outcome = "throttled" if throttled else _outcome(action)
                record_to.append(SendRecord(arrived, _recipient(body), outcome))
                self._state.sends.append(record_to[0])
        if latency:
            await asyncio.sleep(latency)
        if throttled:
            return THROTTLED.response()
        if isinstance(action, Fault):
            return action.response()
        if isinstance(action, Drop):
            if action.forward:
                await self._forward(head, headers, body)
            return None
        if canned is not None and not is_send:
            status, payload = canned
            return _response(status, {"Content-Type": "application/json"},
                             json.dumps(payload).encode())  # fmt: skip
        return await self._forward(head, headers, body)

    async def _forward(self, head: bytes, headers: dict[str, str], body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*self._upstream)
        try:
            lines = [head]
            for name, value in headers.items():
                if name not in ("connection", "keep-alive", "proxy-connection"):
                    lines.append(f"{name}: {value}".encode())
            lines.append(b"connection: close")
            writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        return _reframe(raw)


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    head, *header_lines = raw[:-4].split(b"\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return head, headers, body


def _reframe(raw: bytes) -> bytes:
    """moto's answer, read to the end of its connection, re-framed for a kept-alive one."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    kept = [
        line
        for line in header_lines
        if line.split(b":")[0].strip().lower()
        not in (b"connection", b"keep-alive", b"content-length", b"transfer-encoding")
    ]
    if any(
        line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower()
        for line in header_lines
    ):
        body = _unchunk(body)
    kept.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join([status_line, *kept]) + b"\r\n\r\n" + body


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2 :]
    return bytes(out)


def _response(status: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _recipient(body: bytes) -> str | None:
    try:
        to = json.loads(body)["Destination"]["ToAddresses"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(to[0]) if to else None


def max_in_any_window(times: list[float], window: float = RATE_WINDOW_SECONDS) -> int:
    """The most events found in any ``window`` seconds (half-open) of ``times``."""
    ordered = sorted(times)
    best = start = 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _outcome(action: Action | None) -> str:
    if action is None:
        return "forwarded"
    if isinstance(action, Drop):
        return "dropped"
    return action.error_type or str(action.status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="moto's URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--max-rate", type=float, default=None, help="sends/s before 429")
    args = parser.parse_args()
    proxy = FaultProxy(args.upstream, port=args.port).start()
    proxy.set_latency(args.latency)
    proxy.set_max_rate(args.max_rate)
    print(proxy.endpoint, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    main()
