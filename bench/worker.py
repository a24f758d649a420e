"""CPU per mail of the delivery worker, in process: the quick loop for A/Bs of the worker's code.

``make bench-delivery`` measures delivery against SES's pace (moto behind a proxy); this
measures what one mail costs the process that delivers it, the send itself left out: ``--mails``
outbox rows are queued on a fresh database, then ``DeliveryWorker.run_once()`` sends them all
through the console backend (into a buffer), unpaced, and the process's CPU time (its threads
included) is divided by the mails sent. The ORM took 2.5 ms per mail here; see the benchmark
issue's notes.

    .venv/bin/python -m bench.worker [--mails 5000] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


async def measure(database_url: str, mails: int) -> tuple[int, float, float]:
    """(mails sent, CPU seconds, wall seconds) of delivering ``mails`` queued rows."""
    from sqlalchemy import delete, insert

    from taxease_auth.clock import SystemClock
    from taxease_auth.config import load_settings
    from taxease_auth.mail.backends.console import ConsoleBackend
    from taxease_auth.mail.worker import build_worker
    from taxease_auth.store import migrate
    from taxease_auth.store.db import make_engine, make_sessionmaker
    from taxease_auth.store.models import EmailOutbox

    settings = load_settings(
        _env_file=None,
        database_url=database_url,
        development_mode=True,
        secret_key="testing-" + "x" * 40,
        email_backend="console",
        housekeeping_interval_seconds=0,
    )
    await asyncio.to_thread(migrate.upgrade, settings, "head")
    engine = make_engine(settings)
    now = datetime.now(UTC)
    rows = [
        {
            "recipient": f"bench{i}@example.org",
            "kind": "email_verification",
            "subject": "Your code",
            "html_body": "<p>Your code is 123456.</p>" * 20,
            "text_body": "Your code is 123456.\n" * 20,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "send_before": now + timedelta(hours=1),
            "idempotency_key": f"bench-{i:08d}",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(mails)
    ]
    try:
        async with engine.begin() as connection:
            await connection.execute(delete(EmailOutbox))
            await connection.execute(insert(EmailOutbox), rows)
        worker = build_worker(
            settings,
            sessions=make_sessionmaker(engine),
            backend=ConsoleBackend(stream=io.StringIO(), keep=50),
            clock=SystemClock(),
        )
        cpu, wall = time.process_time(), time.perf_counter()
        sent = await worker.run_once()
        return sent, time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=5000)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    # INFO lines are written, as in production, to nowhere: their formatting is counted.
    logging.basicConfig(level=logging.INFO, stream=Path(os.devnull).open("w"))  # noqa: SIM115
    workdir = Path(tempfile.mkdtemp(prefix="taxease-bench-worker-"))
    try:
        url = args.database_url or f"sqlite:///{workdir / 'worker.sqlite3'}"
        sent, cpu, wall = asyncio.run(measure(url, args.mails))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{sent} mails: {cpu / sent * 1e6:.0f} µs CPU per mail, {sent / wall:.0f} mails/s")


if __name__ == "__main__":
    main()
