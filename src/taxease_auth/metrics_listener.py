"""The listener of ``serve --metrics-port``: /metrics on a port of its own, without a token.

It is meant for a Prometheus scraper on a private address (127.0.0.1 unless the operator
chooses another with ``--metrics-host``), so it asks for no METRICS_TOKEN. It serves exactly
what the API's /metrics serves (``metrics.render``): this process's metrics, or with
PROMETHEUS_MULTIPROC_DIR the sum over every process writing there.

It runs once per ``serve``, in a thread of the process ``serve`` starts in: with one server
process that is the server itself; with ``--workers N`` it is uvicorn's supervisor, which
handles no requests and whose own metrics are not in the shared directory, so every scrape
is the sum over the N server processes (and a separate ``worker`` sharing the directory). One
listener, one port, however many workers; it lives and dies with ``serve``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taxease_auth import metrics

PATH = "/metrics"

logger = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server_version = "taxease-auth-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        if self.path.partition("?")[0] != PATH:
            self._answer(404, b"Not Found\n", "text/plain; charset=utf-8")
            return
        self._answer(200, metrics.render(), metrics.CONTENT_TYPE)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a scrape every few seconds is not worth a log line (the base writes each
        request to stderr)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsListener:
    """A started listener; ``close`` stops it and releases the port."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def start(host: str, port: int) -> MetricsListener:
    """Bind ``host:port`` now (OSError when it cannot: the caller names the option) and serve
    /metrics from a daemon thread."""
    server_class = _Server6 if _is_ipv6(host) else _Server
    server = server_class((host, port), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-listener", daemon=True)
    thread.start()
    listener = MetricsListener(server, thread)
    logger.info("metrics served without a token on %s port %d%s", host, listener.port, PATH)
    return listener


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False  # a host name: resolved as IPv4
