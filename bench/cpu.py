"""CPU per request of one route, in process: the quick loop for profiling (not a target).

``make bench`` measures what a client sees, through uvicorn and wrk, in minutes. This calls the
ASGI application directly (no socket, no HTTP parser), the same settings and seeded rows as
``make bench``, one request after another, and prints microseconds of CPU per request for the
service's verify-otp (valid, wrong), request-otp, token/refresh, /me and the bare reference
route. Differences between two versions of the code show here in seconds; ``--profile FILE``
writes a cProfile of the named scenario for ``python -m pstats``.

    .venv/bin/python -m bench.cpu [--requests 3000] [--profile verify-wrong:/tmp/p.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.http import RAISED_LIMITS, seed

Message = dict[str, Any]


def request_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def post(app: Any, path: str, body: bytes, method: str = "POST", bearer: str = "") -> int:
    scope = request_scope(path)
    scope["method"] = method
    scope["headers"] = [*scope["headers"], (b"content-length", str(len(body)).encode())]
    if bearer:
        scope["headers"].append((b"authorization", f"Bearer {bearer}".encode()))
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(
    name: str,
    call: Callable[[int], Awaitable[int]],
    expected: int,
    requests: int,
    concurrency: int,
    profile: dict[str, str],
) -> float:
    for i in range(min(200, requests // 10)):  # warm-up: caches, first-use imports
        await call(requests + i)
    profiler = cProfile.Profile() if name in profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()

    async def client(first: int) -> None:
        for i in range(first, requests, concurrency):
            status = await call(i)
            if status != expected:
                raise SystemExit(f"{name}: request {i} answered {status}, expected {expected}")

    await asyncio.gather(*(client(first) for first in range(concurrency)))
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile[name])
    cpu = time.process_time() - started
    return cpu * 1e6 / requests


async def main_async(args: argparse.Namespace) -> None:
    from bench.reference_app import app as reference
    from taxease_auth.app import create_app
    from taxease_auth.config import Settings
    from taxease_auth.logs import configure_logging
    from taxease_auth.store.migrate import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="taxease-bench-cpu-"))
    try:
        os.environ.update(RAISED_LIMITS)
        settings = Settings(
            _env_file=None,
            development_mode=True,
            secret_key=secrets.token_urlsafe(32),
            database_url=f"sqlite:///{workdir / 'cpu.sqlite3'}",
            email_backend="console",
            embedded_worker=False,
            log_level="INFO",
        )
        await asyncio.to_thread(upgrade, settings)
        n = args.requests + 300
        seeded = await seed(settings, valid=n, wrong=n, verified=0)
        from bench import sessions

        emails = [email for email, _ in seeded.valid[:1000]]
        live = await sessions.seed_sessions(settings, emails, n + 1000)
        refresh_bodies = [json.dumps({"refresh_token": t}).encode() for *_, t in live[1000:]]
        bearer_tokens = sessions.access_tokens(settings, live[:1000])
        # As the server logs (configure_logging: stderr, the console format), into a file.
        log_file = (workdir / "server.log").open("w")
        real_stderr, sys.stderr = sys.stderr, log_file
        configure_logging(settings)
        sys.stderr = real_stderr
        app = create_app(settings)

        def verify(pairs: list[tuple[str, str]]) -> Callable[[int], Awaitable[int]]:
            bodies = [
                json.dumps({"email": e, "code": c, "purpose": "email_verification"}).encode()
                for e, c in pairs
            ]
            return lambda i: post(app, "/api/v1/auth/verify-otp", bodies[i % len(bodies)])

        request_bodies = [
            json.dumps({"email": e, "purpose": "email_verification"}).encode()
            for e, _ in seeded.wrong
        ]
        reference_body = json.dumps(
            {"email": "a@example.com", "code": "123456", "purpose": "email_verification"}
        ).encode()
        scenarios: list[tuple[str, Callable[[int], Awaitable[int]], int]] = [
            (
                "reference",
                lambda i: post(reference, "/api/v1/auth/verify-otp", reference_body),
                200,
            ),
            ("verify-valid", verify(seeded.valid), 200),
            ("verify-wrong", verify(seeded.wrong), 400),
            (
                "request-otp",
                lambda i: post(app, "/api/v1/auth/request-otp", request_bodies[i % n]),
                202,
            ),
            (
                "refresh",
                lambda i: post(app, "/api/v1/auth/token/refresh", refresh_bodies[i % n]),
                200,
            ),
            (
                "me",
                lambda i: post(app, "/api/v1/auth/me", b"", "GET", bearer_tokens[i % 1000]),
                200,
            ),
        ]
        profile = dict(spec.split(":", 1) for spec in args.profile)
        async with app.router.lifespan_context(app):
            results = {}
            rss = {"start": _rss_mb()}
            for name, call, expected in scenarios:
                if args.only and name not in args.only:
                    continue
                results[name] = await measure(
                    name, call, expected, args.requests, args.concurrency, profile
                )
                await asyncio.sleep(0.5)  # background issues of request-otp
                rss[name] = _rss_mb()
        base = results.get("reference")
        for name, micros in results.items():
            ratio = f"  ratio {base / micros:.2f}" if base else ""
            print(f"{name:14} {micros:8.1f} µs CPU/request{ratio}  (RSS after: {rss[name]} MB)")
        print(f"RSS at start (app running): {rss['start']} MB")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument(
        "--concurrency", type=int, default=1, help="requests in flight (clients), as wrk -c"
    )
    parser.add_argument("--only", type=lambda t: t.split(","), default=[])
    parser.add_argument("--profile", action="append", default=[], metavar="SCENARIO:FILE")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main_async(args))
    except ImportError:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
