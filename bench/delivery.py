"""Delivery benchmark (issue 3): throughput at SES's MaxSendRate, and latency when not backlogged.

SES is moto's server behind the fault-injecting proxy (``tests/support/fault_proxy.py``), both
in a child process: every call takes ``--latency`` seconds (100 ms), sends beyond
``--max-rate`` per second (50) are answered 429 TooManyRequestsException, and GetAccount
reports that rate as MaxSendRate, as SES would. The service runs in this process with its
embedded worker, on a fresh SQLite database, in production mode.

1. Throughput: ``--mails`` (2,000) mails are queued, then the service starts; the achieved
   rate is measured at the proxy (first to last accepted send) and reported as a fraction of
   the max rate (target >= 0.9), with the 429s received (target 0) and the mails lost or
   duplicated (target 0), read back from moto and the outbox.
2. Latency: ``--registrations`` (100) registrations through the API, spaced ``--spacing``
   (0.1 s: 10/s, under the rate, so the queue never backs up); each is timed from the start of
   its request to its mail's arrival at SES and to SES's answer (p50/p99, target p99 < 1 s).
   The request includes argon2id at the production defaults.

Both share the machine's two cores with moto and the proxy: figures are for this machine,
this run. Results go to ``bench/results/delivery-<time>.json``. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SENDER = "no-reply@bench.taxease.example"
REGION = "ca-central-1"
PASSWORD = "correct horse battery staple"


# --- the SES side (child process) ------------------------------------------------------------


def serve_ses(latency: float, max_rate: float) -> None:
    """moto + the proxy; prints their endpoints as one JSON line, serves until stdin closes."""
    import logging

    from moto.server import ThreadedMotoServer
    from tests.support.fault_proxy import FaultProxy

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    upstream = f"http://{host}:{port}"
    proxy = FaultProxy(upstream).start()
    proxy.set_latency(latency)
    proxy.set_max_rate(max_rate)
    # What SES's GetAccount says (moto has none): the worker reads its pace from here.
    proxy.answer(
        "GET",
        "/v2/email/account",
        200,
        {
            "SendQuota": {"Max24HourSend": 1e6, "MaxSendRate": max_rate, "SentLast24Hours": 0.0},
            "SendingEnabled": True,
            "ProductionAccessEnabled": True,
        },
    )
    print(json.dumps({"moto": upstream, "proxy": proxy.endpoint}), flush=True)
    try:
        sys.stdin.read()
    finally:
        proxy.stop()
        moto.stop()


class SesProcess:
    def __init__(self, latency: float, max_rate: float) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - this very script, fixed arguments
            [sys.executable, "-m", "bench.delivery", "--serve-ses",
             "--latency", str(latency), "--max-rate", str(max_rate)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        endpoints = json.loads(self.process.stdout.readline())
        self.moto: str = endpoints["moto"]
        self.proxy: str = endpoints["proxy"]

    def proxy_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.proxy}/_proxy/stats", timeout=30).json()
        return stats

    def messages(self) -> list[dict[str, Any]]:
        data = httpx.get(f"{self.moto}/moto-api/data.json", timeout=60).json()
        messages: list[dict[str, Any]] = data.get("ses", {}).get("Message", [])
        return messages

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


# --- the service side (this process) ---------------------------------------------------------


def settings_for(database: Path, proxy: str) -> Any:
    from taxease_auth.config import Settings

    return Settings(
        _env_file=None,
        development_mode=False,
        secret_key=secrets.token_urlsafe(32),
        database_url=f"sqlite:///{database}",
        email_backend="ses",
        aws_ses_from_email=SENDER,
        aws_endpoint_url=proxy,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        aws_region=REGION,
        # One client sends every registration: its per-address budgets are opened wide.
        rate_limit_register_per_ip="100000/hour",
        rate_limit_otp_issue_per_ip="100000/hour",
        log_level="WARNING",
    )


def verify_sender(moto: str) -> None:
    import boto3

    client = boto3.session.Session().client(
        "sesv2",
        region_name=REGION,
        endpoint_url=moto,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    client.create_email_identity(EmailIdentity=SENDER)
    client.close()


async def queue_mails(settings: Any, count: int) -> None:
    from taxease_auth.mail.render import MailRenderer
    from taxease_auth.store import outbox
    from taxease_auth.store.db import make_engine
    from taxease_auth.store.models import MailKind
    from taxease_auth.store.sql import database_for

    engine = make_engine(settings)
    database = database_for(engine)
    renderer = MailRenderer(settings.app_name)
    now = datetime.now(UTC)
    try:
        async with database.transaction() as tx:
            for i in range(count):
                code = f"{secrets.randbelow(10**6):06d}"
                mail = renderer.render(
                    MailKind.EMAIL_VERIFICATION, code=code, first_name="Bench", expires_minutes=15
                )
                await outbox.enqueue(
                    tx,
                    recipient=f"queued{i}@bench.example.org",
                    kind=MailKind.EMAIL_VERIFICATION,
                    mail=mail,
                    otp_id=None,
                    send_before=now + timedelta(minutes=15),
                    now=now,
                )
    finally:
        await database.close()
        await engine.dispose()


async def outbox_statuses(app: Any) -> collections.Counter[str]:
    from sqlalchemy import func, select

    from taxease_auth.store.db import make_sessionmaker
    from taxease_auth.store.models import EmailOutbox

    async with make_sessionmaker(app.state.engine)() as session:
        rows = await session.execute(
            select(EmailOutbox.status, func.count()).group_by(EmailOutbox.status)
        )
        return collections.Counter(dict(rows.all()))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from asgi_lifespan import LifespanManager

    from taxease_auth.app import create_app
    from taxease_auth.store import migrate

    ses = SesProcess(args.latency, args.max_rate)
    workdir = Path(tempfile.mkdtemp(prefix="taxease-bench-"))
    try:
        settings = settings_for(workdir / "bench.sqlite3", ses.proxy)
        await asyncio.to_thread(migrate.upgrade, settings)
        await asyncio.to_thread(verify_sender, ses.moto)
        await queue_mails(settings, args.mails)
        print(f"queued {args.mails} mails; starting the service", file=sys.stderr)

        app = create_app(settings)
        async with LifespanManager(app) as manager:
            started = time.time()
            deadline = started + args.mails / args.max_rate * 3 + 60
            while True:
                statuses = await outbox_statuses(app)
                if statuses["pending"] == 0 or time.time() > deadline:
                    break
                await asyncio.sleep(0.5)
            drained = time.time()
            print(f"throughput phase done: {dict(statuses)}", file=sys.stderr)

            latencies = await registrations(manager.app, ses, args)

        throughput = throughput_figures(ses, args, statuses, started, drained)
        latency = latency_figures(ses, latencies)
    finally:
        ses.close()
    return {
        "benchmark": "delivery",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "setup": {
            "mails": args.mails,
            "max_send_rate": args.max_rate,
            "ses_latency_seconds": args.latency,
            "worker_concurrency": settings.outbox_worker_concurrency,
            "registrations": args.registrations,
            "registration_spacing_seconds": args.spacing,
            "database": "sqlite",
            "note": "moto + proxy in a child process share the 2 cores with the service",
        },
        "throughput": throughput,
        "latency": latency,
        "targets_met": {
            "rate_fraction>=0.9": throughput["rate_fraction"] >= 0.9,
            "throttled==0": throughput["throttled"] == 0,
            "lost==0": throughput["lost"] == 0 and latency["lost"] == 0,
            "duplicated==0": throughput["duplicated"] == 0 and latency["duplicated"] == 0,
            "p99_to_acceptance<1s": latency["to_acceptance_seconds"]["p99"] < 1.0,
        },
    }


async def registrations(app: Any, ses: SesProcess, args: argparse.Namespace) -> dict[str, float]:
    """Start each registration ``spacing`` apart; returns request start time per email."""
    starts: dict[str, float] = {}
    statuses: list[int] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

        async def register(email: str) -> None:
            starts[email] = time.time()
            response = await http.post(
                "/api/v1/auth/register",
                json={
                    "email": email,
                    "password": PASSWORD,
                    "first_name": "Bench",
                    "last_name": "User",
                    "accept_terms": True,
                },
            )
            statuses.append(response.status_code)

        tasks = []
        for i in range(args.registrations):
            tasks.append(asyncio.create_task(register(f"latency{i}@bench.example.org")))
            await asyncio.sleep(args.spacing)
        await asyncio.gather(*tasks)
        # Let the last mails leave.
        deadline = time.time() + 30
        while time.time() < deadline:
            forwarded = {
                s["recipient"]
                for s in ses.proxy_stats()["forwarded"]
                if s["recipient"] in starts and s["answered"] is not None
            }
            if len(forwarded) == len(starts):
                break
            await asyncio.sleep(0.2)
    unexpected = [s for s in statuses if s != 201]
    if unexpected:
        raise SystemExit(f"benchmark failed: registrations answered {unexpected[:5]}")
    return starts


def throughput_figures(
    ses: SesProcess,
    args: argparse.Namespace,
    statuses: collections.Counter[str],
    started: float,
    drained: float,
) -> dict[str, Any]:
    stats = ses.proxy_stats()
    queued = [s for s in stats["forwarded"] if str(s["recipient"]).startswith("queued")]
    arrivals = sorted(s["at"] for s in queued)
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    delivered = collections.Counter(
        to
        for m in ses.messages()
        for to in m["destinations"]["ToAddresses"]
        if to.startswith("queued")
    )
    from tests.support.fault_proxy import max_in_any_window

    return {
        "achieved_rate_per_second": round(rate, 2),
        "rate_fraction": round(rate / args.max_rate, 3),
        "wall_clock_rate_per_second": round(args.mails / (drained - started), 2),
        "busiest_second_at_ses": max_in_any_window(arrivals),
        "throttled": stats["outcomes"].get("throttled", 0)
        + stats["outcomes"].get("TooManyRequestsException", 0),
        "outbox": dict(statuses),
        "delivered": sum(1 for count in delivered.values() if count >= 1),
        "lost": args.mails - len(delivered),
        "duplicated": sum(count - 1 for count in delivered.values() if count > 1),
        "seconds": round(drained - started, 1),
    }


def latency_figures(ses: SesProcess, starts: dict[str, float]) -> dict[str, Any]:
    stats = ses.proxy_stats()
    first: dict[str, dict[str, Any]] = {}
    for send in stats["forwarded"]:
        if send["recipient"] in starts and send["recipient"] not in first:
            first[send["recipient"]] = send
    to_ses = [first[e]["at"] - starts[e] for e in first]
    to_acceptance = [first[e]["answered"] - starts[e] for e in first if first[e]["answered"]]
    delivered = collections.Counter(
        to for m in ses.messages() for to in m["destinations"]["ToAddresses"] if to in starts
    )

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "p50": round(statistics.median(values), 3),
            "p99": round(percentile(values, 0.99), 3),
            "max": round(max(values), 3),
        }

    return {
        "registrations": len(starts),
        "to_arrival_at_ses_seconds": summary(to_ses),
        "to_acceptance_seconds": summary(to_acceptance),
        "lost": len(starts) - len(delivered),
        "duplicated": sum(count - 1 for count in delivered.values() if count > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--max-rate", type=float, default=50.0)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--registrations", type=int, default=100)
    parser.add_argument("--spacing", type=float, default=0.1)
    parser.add_argument("--serve-ses", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ses:
        serve_ses(args.latency, args.max_rate)
        return
    results = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"delivery-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written to {path.relative_to(ROOT)}", file=sys.stderr)
    if not all(results["targets_met"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
