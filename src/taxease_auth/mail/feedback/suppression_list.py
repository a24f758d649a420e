"""The operator's side of the suppression list (`taxease-auth suppression list | add |
remove`): each change is an audit event (DESIGN.md §10).

Removing an address is how support lets a person whose mailbox works again receive codes.
"""

from __future__ import annotations

from taxease_auth.auth.emails import email_fingerprint
from taxease_auth.clock import Clock, SystemClock
from taxease_auth.config import Settings
from taxease_auth.operations import Outcome, when
from taxease_auth.store import audit, suppression
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import SuppressionReason
from taxease_auth.store.sql import database_for

AUDIT_EVENT = "mail_suppression"


async def listed(settings: Settings, *, limit: int) -> Outcome:
    """The suppressed addresses, newest first."""
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session:
            entries = await suppression.listed(session, limit=limit)
    finally:
        await engine.dispose()
    if not entries:
        return Outcome("no suppressed addresses")
    lines = [
        f"{when(entry.created_at)}  {entry.reason:<9} {entry.email}  {entry.detail or ''}".rstrip()
        for entry in entries
    ]
    return Outcome("\n".join(["since                    reason    address", *lines]))


async def change(
    settings: Settings,
    email: str,
    *,
    add: bool,
    reason_text: str | None = None,
    clock: Clock | None = None,
) -> Outcome:
    """Add (reason ``manual``, ``reason_text`` as its detail) or remove canonical ``email``;
    audited when it changed anything. Exit 1 when there was nothing to change."""
    now = (clock or SystemClock()).now()
    engine = make_engine(settings)
    database = database_for(engine, pool_size=1)
    try:
        async with database.transaction() as tx:
            if add:
                changed = await suppression.add(
                    tx, email, reason=SuppressionReason.MANUAL, detail=reason_text, now=now
                )
            else:
                changed = await suppression.remove(tx, email)
            if changed:
                await audit.record(
                    tx,
                    now=now,
                    event=AUDIT_EVENT,
                    email_hash=email_fingerprint(settings.signing_key, email),
                    ip=None,
                    outcome="added" if add else "removed",
                    detail=f"manual: {reason_text}" if add and reason_text else "manual",
                )
    finally:
        await database.close()
        await engine.dispose()
    if add:
        if not changed:
            return Outcome(f"{email} was already suppressed (`why {email}` says since when)", 1)
        return Outcome(f"{email} suppressed: the delivery worker sends it nothing")
    if not changed:
        return Outcome(f"{email} was not suppressed", 1)
    return Outcome(f"{email} removed from the suppression list: codes go to it again")
