"""EXPLAIN (ANALYZE, BUFFERS) of the SQL the service really emits on its hot paths.

Each store function runs once against DATABASE_URL inside a transaction that is rolled back,
with its statements captured as they go to the driver; then, in a fresh transaction (also
rolled back), each captured statement is run again under EXPLAIN (ANALYZE, BUFFERS) with the
same parameters, in the same order. Usage:
    DATABASE_URL=postgresql://... .venv/bin/python docs/explain/explain_hot_queries.py \
        [verify] [claim] [housekeeping] [purge]      (default: verify claim)
Not a test and not part of the package: run by hand for docs/deploy.md.
"""

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.config import load_settings
from taxease_auth.store import housekeeping, otps, outbox
from taxease_auth.store.db import make_engine

NOW = datetime.now(UTC)


def steps(email: str) -> dict[str, Callable[[AsyncSession], Awaitable[Any]]]:
    return {
        # POST /verify-otp: the newest live code for (email, purpose)
        "verify": lambda s: otps.newest_candidate(
            s, email=email, purpose="email_verification", challenge_id=None
        ),
        # the delivery worker, once per mail: lease one due row
        "claim": lambda s: outbox.claim_due(
            s, worker_id="explain", now=NOW, lease=timedelta(seconds=60), limit=1
        ),
        # the delivery worker, every second
        "housekeeping": lambda s: _housekeeping(s),
        # the delivery worker, every HOUSEKEEPING_INTERVAL_SECONDS (and `taxease-auth purge`)
        "purge": lambda s: housekeeping.purge(
            s,
            now=NOW,
            codes_older_than=timedelta(hours=24),
            outbox_older_than=timedelta(days=7),
            audit_older_than=timedelta(days=90),
        ),
    }


async def _housekeeping(session: AsyncSession) -> None:
    await outbox.expire_overdue(session, now=NOW)
    await outbox.clear_dead_bodies(session, now=NOW)
    await outbox.pending_summary(session)


async def main(names: list[str]) -> None:
    engine = make_engine(load_settings())
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def capture(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        captured.append((statement, parameters))

    async with engine.connect() as connection:
        email = (
            await connection.execute(
                text(
                    "SELECT email FROM otps WHERE NOT used AND retired_at IS NULL "
                    "AND purpose = 'email_verification' ORDER BY id DESC LIMIT 1"
                )
            )
        ).scalar_one()
    for name in names:
        captured.clear()
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await steps(email)[name](AsyncSession(bind=connection))
            await transaction.rollback()
        statements = list(captured)
        async with engine.connect() as connection:
            transaction = await connection.begin()
            for statement, parameters in statements:
                print(f"-- {name}\n{statement}\n-- parameters: {parameters}\n")
                plan = await connection.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
                )
                print("\n".join(row[0] for row in plan), end="\n\n")
            await transaction.rollback()
    await engine.dispose()


asyncio.run(main(sys.argv[1:] or ["verify", "claim"]))
