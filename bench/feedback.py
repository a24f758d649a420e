"""SES feedback throughput: 10,000 events through moto's SQS into one delivery worker.

moto runs in a child process (its CPU is not the worker's), and so does the producer that
feeds the queue (through moto's backend, without HTTP). ``--events`` outbox rows are written
as mails SES accepted (message ids of our own: sending 10,000 through moto would only measure
moto), and one SQS message per event is produced (a realistic mix: deliveries, delays,
permanent and transient bounces, complaints; half raw, half in SNS envelopes), keeping the
queue at most ``--depth`` deep: moto's SQS scans every message of a queue several times per
receive, so a deep queue measures moto, not the worker. One worker (``build_worker``, as
``taxease-auth worker`` builds it) consumes the queue while it also sends ``--mails`` codes
paced at ``--send-rate`` through the console backend.

Reported per database: events/s end to end (first event read to last one recorded), the
worker process's CPU per event (its threads included, the paced sends too), the busiest second
of code sends against the pace; and the consumer's own ceiling: the same events applied
in process without SQS (parse, one transaction each), events/s and CPU per event. Results go
to bench/results/feedback-*.json.

    make bench-feedback                     # SQLite, then PostgreSQL
    .venv/bin/python -m bench.feedback --database sqlite --events 2000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REGION = "ca-central-1"
TOPIC = "arn:aws:sns:ca-central-1:123456789012:bench-ses-events"
TARGET_EVENTS_PER_SECOND = 500


def serve_moto() -> None:
    """moto; prints its endpoint as one JSON line. Each later line on stdin,
    ``{"queue": name, "events": n, "depth": d}``, starts a producer; serves until stdin closes.
    """
    import threading

    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.server import ThreadedMotoServer
    from moto.sqs.models import sqs_backends

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    print(json.dumps({"moto": f"http://{host}:{port}"}), flush=True)

    def produce(queue_name: str, events: int, depth: int) -> None:
        backend = sqs_backends[DEFAULT_ACCOUNT_ID][REGION]
        queue = backend.get_queue(queue_name)
        for n in range(events):
            while len(queue._messages) >= depth:
                time.sleep(0.001)
            backend.send_message(
                queue_name, event_body(n, f"bench-message-{n:08d}", f"bench{n}@example.org")
            )

    try:
        for line in sys.stdin:
            order = json.loads(line)
            threading.Thread(
                target=produce, args=(order["queue"], order["events"], order["depth"]), daemon=True
            ).start()
    finally:
        moto.stop()


def event_body(n: int, message_id: str, recipient: str) -> str:
    """The n-th event of the mix, as SES publishes it (every other one in an SNS envelope)."""
    mail = {"timestamp": "2026-12-05T10:00:00.000Z", "messageId": message_id,
            "destination": [recipient], "source": "no-reply@bench.taxease.example"}  # fmt: skip
    at = "2026-12-05T10:00:01.000Z"
    kind = n % 100
    event: dict[str, Any]
    if kind < 80:
        delivery = {"timestamp": at, "recipients": [recipient], "smtpResponse": "250 2.0.0 OK"}
        event = {"eventType": "Delivery", "mail": mail, "delivery": delivery}
    elif kind < 88:
        event = {"eventType": "DeliveryDelay", "mail": mail, "deliveryDelay": {
            "timestamp": at, "delayType": "MailboxFull", "expirationTime": at,
            "delayedRecipients": [{"emailAddress": recipient, "status": "4.2.2"}]}}  # fmt: skip
    elif kind < 96:
        bounce_type = "Permanent" if kind < 92 else "Transient"
        event = {"eventType": "Bounce", "mail": mail, "bounce": {
            "timestamp": at, "bounceType": bounce_type, "bounceSubType": "General",
            "feedbackId": f"fb-{n}", "bouncedRecipients": [{"emailAddress": recipient,
            "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}}  # fmt: skip
    else:
        event = {"eventType": "Complaint", "mail": mail, "complaint": {
            "timestamp": at, "feedbackId": f"fb-{n}", "complaintFeedbackType": "abuse",
            "complainedRecipients": [{"emailAddress": recipient}]}}  # fmt: skip
    body = json.dumps(event)
    if n % 2:
        body = json.dumps({"Type": "Notification", "MessageId": f"sns-{n}", "TopicArn": TOPIC,
                           "Message": body, "Timestamp": at})  # fmt: skip
    return body


async def run(
    database_url: str, moto: str, producer: Any, args: argparse.Namespace
) -> dict[str, Any]:
    import boto3.session
    from sqlalchemy import func, insert, select

    from taxease_auth.clock import SystemClock
    from taxease_auth.config import load_settings
    from taxease_auth.mail.backends.console import ConsoleBackend
    from taxease_auth.mail.worker import build_worker
    from taxease_auth.store import migrate
    from taxease_auth.store.db import make_engine, make_sessionmaker
    from taxease_auth.store.models import EmailOutbox, MailEvent

    sqs = boto3.session.Session().client(
        "sqs", region_name=REGION, endpoint_url=moto,
        aws_access_key_id="bench", aws_secret_access_key="bench",
    )  # fmt: skip
    queue = sqs.create_queue(QueueName=f"bench-feedback-{os.getpid()}")["QueueUrl"]
    settings = load_settings(
        _env_file=None,
        database_url=database_url,
        development_mode=True,
        secret_key="bench-" + "x" * 40,
        email_backend="console",
        housekeeping_interval_seconds=0,
        aws_endpoint_url=moto,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        aws_region=REGION,
        ses_feedback_queue_url=queue,
        ses_feedback_topic_arn=TOPIC,
        ses_max_send_rate=args.send_rate,
    )
    await asyncio.to_thread(migrate.upgrade, settings, "head")
    engine = make_engine(settings)
    now = datetime.now(UTC)

    def row(n: int, status: str, **extra: Any) -> dict[str, Any]:
        return {"recipient": f"bench{n}@example.org", "kind": "email_verification",
                "subject": "Your code", "status": status, "attempts": 0,
                "next_attempt_at": now, "send_before": now + timedelta(hours=1),
                "idempotency_key": f"bench-{status}-{n:08d}", "created_at": now,
                "updated_at": now, **extra}  # fmt: skip

    accepted = [
        row(n, "sent", provider_message_id=f"bench-message-{n:08d}", delivery_state="accepted")
        for n in range(args.events)
    ]
    pending = [
        row(args.events + n, "pending", html_body="<p>123456</p>", text_body="123456")
        for n in range(args.mails)
    ]
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(EmailOutbox), accepted)
        async with engine.begin() as connection:  # the codes, due now: sent while events flow
            await connection.execute(insert(EmailOutbox), pending)

        sessions = make_sessionmaker(engine)
        worker = build_worker(
            settings,
            sessions=sessions,
            backend=ConsoleBackend(stream=io.StringIO(), keep=10),
            clock=SystemClock(),
            standby=False,
        )
        cpu, wall = time.process_time(), time.perf_counter()
        task = asyncio.create_task(worker.run())
        order = {"queue": queue.rsplit("/", 1)[-1], "events": args.events, "depth": args.depth}
        producer.write(json.dumps(order) + "\n")
        producer.flush()
        recorded = 0
        deadline = wall + args.timeout
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.25)
            async with sessions() as session:
                recorded = int(await session.scalar(select(func.count(MailEvent.id))) or 0)
                sent_query = select(func.count(EmailOutbox.id)).where(
                    EmailOutbox.status == "sent", EmailOutbox.sent_at.is_not(None)
                )
                sent = int(await session.scalar(sent_query) or 0)
            if recorded >= args.events and sent >= args.mails:
                break
        events_wall = time.perf_counter() - wall
        events_cpu = time.process_time() - cpu
        await worker.stop()
        await task
        async with sessions() as session:
            result = await session.execute(
                select(EmailOutbox.sent_at).where(EmailOutbox.sent_at.is_not(None))
            )
            sent_times = sorted(t.timestamp() for (t,) in result if t is not None)
        busiest = max_in_a_second(sent_times)
    finally:
        await engine.dispose()
        sqs.close()
    return {
        "events": args.events,
        "events_recorded": recorded,
        "seconds": round(events_wall, 2),
        "events_per_second": round(recorded / events_wall, 1),
        "cpu_us_per_event": round(events_cpu / max(recorded, 1) * 1e6),
        "codes_sent": len(sent_times),
        "send_rate_limit": args.send_rate,
        "busiest_second_sends": busiest,
    }


async def ceiling(database_url: str, events: int) -> dict[str, Any]:
    """The consumer's own cost, SQS left out: ``events`` messages applied in process."""
    from sqlalchemy import insert

    from taxease_auth.clock import SystemClock
    from taxease_auth.config import load_settings
    from taxease_auth.mail.feedback.consumer import FeedbackConsumer
    from taxease_auth.store import migrate
    from taxease_auth.store.db import make_engine
    from taxease_auth.store.models import EmailOutbox
    from taxease_auth.store.sql import database_for

    settings = load_settings(
        _env_file=None,
        database_url=database_url,
        development_mode=True,
        secret_key="bench-" + "x" * 40,
        email_backend="console",
        ses_feedback_queue_url="http://unused.invalid/queue",
        ses_feedback_topic_arn=TOPIC,
    )
    await asyncio.to_thread(migrate.upgrade, settings, "head")
    engine = make_engine(settings)
    database = database_for(engine)
    now = datetime.now(UTC)
    rows = [
        {"recipient": f"ceiling{n}@example.org", "kind": "login", "subject": "s",
         "status": "sent", "attempts": 1, "next_attempt_at": now,
         "idempotency_key": f"ceiling-{n:08d}", "provider_message_id": f"ceiling-{n:08d}",
         "delivery_state": "accepted", "created_at": now, "updated_at": now}
        for n in range(events)
    ]  # fmt: skip
    messages = [
        {"MessageId": f"sqs-{n}", "ReceiptHandle": "-",
         "Body": event_body(n, f"ceiling-{n:08d}", f"ceiling{n}@example.org")}
        for n in range(events)
    ]  # fmt: skip
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(EmailOutbox), rows)
        consumer = FeedbackConsumer(settings, clock=SystemClock(), client=object())
        cpu, wall = time.process_time(), time.perf_counter()
        for message in messages:
            await consumer._handle(database, message)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await database.close()
        await engine.dispose()
    return {
        "events_per_second": round(events / wall, 1),
        "cpu_us_per_event": round(cpu / events * 1e6),
    }


def max_in_a_second(times: list[float]) -> int:
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-moto", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--mails", type=int, default=200, help="codes sent meanwhile")
    parser.add_argument("--send-rate", type=float, default=20.0, help="their pace, per second")
    parser.add_argument("--depth", type=int, default=20, help="most messages queued at once")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.serve_moto:
        serve_moto()
        return
    # INFO lines are written, as in production, to nowhere: their formatting is counted.
    logging.basicConfig(level=logging.INFO, stream=Path(os.devnull).open("w"))  # noqa: SIM115
    from bench.http import Children, start_postgres

    moto = subprocess.Popen(
        [sys.executable, "-m", "bench.feedback", "--serve-moto"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert moto.stdout is not None
    assert moto.stdin is not None
    endpoint = json.loads(moto.stdout.readline())["moto"]
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="taxease-bench-feedback-"))
    results: dict[str, Any] = {"cores": os.cpu_count(), "note": "moto shares the cores"}
    try:
        databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
        for database in databases:
            url = (
                f"sqlite:///{workdir / 'feedback.sqlite3'}"
                if database == "sqlite"
                else start_postgres(children)
            )
            figures = asyncio.run(run(url, endpoint, moto.stdin, args))
            figures["in_process"] = asyncio.run(ceiling(url, args.events))
            results[database] = figures
            rate = figures["events_per_second"]
            verdict = "PASS" if rate >= TARGET_EVENTS_PER_SECOND else "FAIL"
            paced = figures["busiest_second_sends"] <= args.send_rate + 1
            print(
                f"{database:<10} {figures['events_recorded']} events in {figures['seconds']} s: "
                f"{figures['events_per_second']} events/s ({verdict}, target "
                f"{TARGET_EVENTS_PER_SECOND}/s), {figures['cpu_us_per_event']} µs CPU per event; "
                f"{figures['codes_sent']} codes sent meanwhile, busiest second "
                f"{figures['busiest_second_sends']} (pace {args.send_rate:g}/s: "
                f"{'kept' if paced else 'EXCEEDED'})",
                flush=True,
            )
            inner = figures["in_process"]
            print(
                f"{'':<10} without SQS (the consumer's own ceiling): "
                f"{inner['events_per_second']} events/s, "
                f"{inner['cpu_us_per_event']} µs CPU per event",
                flush=True,
            )
    finally:
        children.close()
        moto.stdin.close()
        moto.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"feedback-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
