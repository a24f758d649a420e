"""Shared steps of the feedback tests: send a real code through SES (moto), wait for what the
consumer recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import select

from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import EmailOutbox, MailEvent, SuppressedAddress
from tests.conftest import STRONG_PASSWORD, RunningApp

T = TypeVar("T")
WAIT_SECONDS = 15.0


async def register(running: RunningApp, email: str) -> None:
    answer = await running.client.post(
        "/api/v1/auth/register",
        json={
            "email": email,
            "password": STRONG_PASSWORD,
            "first_name": "Test",
            "last_name": "User",
            "accept_terms": True,
        },
    )
    assert answer.status_code == 201, answer.text


async def sent_row(running: RunningApp, email: str) -> EmailOutbox:
    """The newest outbox row to ``email``, once SES accepted it."""

    async def accepted() -> EmailOutbox | None:
        rows = [r for r in await running.outbox() if r.recipient == email]
        if rows and rows[-1].status == "sent":
            return rows[-1]
        return None

    return await eventually(accepted)


async def send_code(running: RunningApp, email: str) -> str:
    """Register ``email``; the SES message id of its code mail."""
    await register(running, email)
    row = await sent_row(running, email)
    assert row.provider_message_id
    return row.provider_message_id


async def eventually(
    probe: Callable[[], Awaitable[T | None]], wait_seconds: float = WAIT_SECONDS
) -> T:
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def events(running: RunningApp) -> list[MailEvent]:
    async with make_sessionmaker(running.app.state.engine)() as session:
        return list((await session.execute(select(MailEvent).order_by(MailEvent.id))).scalars())


async def suppressed(running: RunningApp) -> dict[str, SuppressedAddress]:
    async with make_sessionmaker(running.app.state.engine)() as session:
        rows = (await session.execute(select(SuppressedAddress))).scalars()
        return {row.email: row for row in rows}


async def row_by_id(running: RunningApp, row_id: int) -> EmailOutbox:
    [row] = [r for r in await running.outbox() if r.id == row_id]
    return row
