"""The delivery worker against SES as moto's server behind our fault-injecting proxy.

Each test counts what reached SES (moto's stored mail, and what the proxy saw) and what the
outbox says: nothing is lost, nothing is sent twice unless SES may have accepted it already,
and every row ends sent, failed (with its reason) or expired. Backoff is moved through with a
ManualClock; only the breaker's probe timer and the pace run on real time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import botocore.exceptions
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from taxease_auth.cli import app as cli_app
from taxease_auth.clock import ManualClock
from taxease_auth.config import Settings
from taxease_auth.mail.backends.base import TransientSendError
from taxease_auth.mail.backends.console import ConsoleBackend
from taxease_auth.mail.backends.ses import (
    SesBackend,
    classify_botocore_error,
    classify_client_error,
)
from taxease_auth.mail.render import MailRenderer
from taxease_auth.mail.worker import DeliveryWorker, build_worker
from taxease_auth.store import outbox
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import EmailOutbox, MailKind
from tests.conftest import SENDER, SesInbox, SettingsFactory, extract_code
from tests.support import transaction_on
from tests.support.fault_proxy import (
    DROP,
    FORWARD_THEN_DROP,
    SENDING_PAUSED,
    THROTTLED,
    UNAVAILABLE,
    FaultProxy,
    max_in_any_window,
    recipient_not_verified,
)

WAIT_SECONDS = 15.0
URL = "https://email.ca-central-1.amazonaws.com/v2/email/outbound-emails"
PROBE_SECONDS = 0.2
# Beyond any backoff of the first attempts (full jitter up to 2**attempt s, at most 60 s).
PAST_BACKOFF = timedelta(seconds=61)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def eventually(check: Callable[[], Any], what: str, seconds: float = WAIT_SECONDS) -> None:
    """Wait until ``check()`` (sync or async) is true."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Delivery:
    """An outbox in a migrated database, SES behind the proxy, and workers to deliver it."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: ManualClock
    proxy: FaultProxy
    ses: SesInbox
    renderer: MailRenderer = field(default_factory=lambda: MailRenderer("TaxEase"))
    codes: dict[str, str] = field(default_factory=dict)
    _closers: list[Any] = field(default_factory=list)
    _running: list[tuple[DeliveryWorker, asyncio.Task[None]]] = field(default_factory=list)

    def worker(
        self,
        *,
        concurrency: int = 10,
        rate: float | None = 1000.0,
        probe_seconds: float = 30.0,
        settings: Settings | None = None,
    ) -> DeliveryWorker:
        backend = SesBackend(settings or self.settings, max_concurrency=concurrency)
        self._closers.append(backend)
        return DeliveryWorker(
            sessions=self.sessions,
            backend=backend,
            sender=SENDER,
            clock=self.clock,
            lease_seconds=self.settings.outbox_lease_seconds,
            concurrency=concurrency,
            max_send_rate=rate,
            breaker_probe_seconds=probe_seconds,
            poll_interval=0.05,
        )

    def start(self, worker: DeliveryWorker) -> asyncio.Task[None]:
        task = asyncio.create_task(worker.run())
        self._running.append((worker, task))
        return task

    async def queue(
        self,
        count: int = 0,
        *,
        prefix: str = "user",
        valid_for: timedelta = timedelta(minutes=5),
        to: list[str] | None = None,
    ) -> list[str]:
        """Queue ``count`` verification mails as the API does, each with its own code (or one
        to each address of ``to``)."""
        now = self.clock.now()
        recipients = to or [f"{prefix}{i}-{secrets.token_hex(2)}@example.org" for i in range(count)]
        async with transaction_on(self.engine) as tx:
            for recipient in recipients:
                code = f"{secrets.randbelow(10**6):06d}"
                self.codes[recipient] = code
                mail = self.renderer.render(
                    MailKind.EMAIL_VERIFICATION, code=code, first_name="Test", expires_minutes=5
                )
                await outbox.enqueue(
                    tx,
                    recipient=recipient,
                    kind=MailKind.EMAIL_VERIFICATION,
                    mail=mail,
                    otp_id=None,
                    send_before=now + valid_for,
                    now=now,
                )
        return recipients

    async def rows(self) -> list[EmailOutbox]:
        async with self.sessions() as session:
            return list((await session.scalars(select(EmailOutbox).order_by(EmailOutbox.id))).all())

    async def statuses(self) -> collections.Counter[str]:
        return collections.Counter(row.status for row in await self.rows())

    def delivered(self) -> collections.Counter[str]:
        """How many mails SES (moto) accepted per recipient."""
        return collections.Counter(
            to for m in self.ses.messages() for to in m["destinations"]["ToAddresses"]
        )

    async def close(self) -> None:
        for worker, task in self._running:
            await worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for closer in self._closers:
            await closer.aclose()
        await self.engine.dispose()


@pytest.fixture
def proxy(ses: SesInbox) -> Iterator[FaultProxy]:
    with FaultProxy(ses.endpoint) as running:
        yield running


@pytest.fixture
async def delivery(
    ses_settings: SettingsFactory, ses: SesInbox, proxy: FaultProxy
) -> AsyncIterator[Delivery]:
    ses.verify_identity(SENDER)
    settings = ses_settings(aws_endpoint_url=proxy.endpoint, embedded_worker=False)
    engine = make_engine(settings)
    harness = Delivery(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        clock=ManualClock(),
        proxy=proxy,
        ses=ses,
    )
    try:
        yield harness
    finally:
        await harness.close()


# --- transient failures --------------------------------------------------------------------


async def test_ses_down_then_back_delivers_every_pending_mail_exactly_once(
    delivery: Delivery,
) -> None:
    recipients = await delivery.queue(12)
    worker = delivery.worker()
    retried_before = sample("taxease_mails_total", kind="email_verification", outcome="retried")

    delivery.proxy.fail_sends(UNAVAILABLE)
    assert await worker.run_once() == 12
    assert (await delivery.statuses()) == {"pending": 12}
    assert delivery.delivered() == {}
    rows = await delivery.rows()
    assert all(row.attempts == 1 and "ServiceUnavailable" in (row.last_error or "") for row in rows)

    # Still down at the next round: the connection is refused outright this time.
    delivery.proxy.fail_sends(DROP)
    delivery.clock.advance(PAST_BACKOFF)
    assert await worker.run_once() == 12
    assert delivery.delivered() == {}

    delivery.proxy.heal()
    delivery.clock.advance(PAST_BACKOFF)
    assert await worker.run_once() == 12

    assert delivery.delivered() == dict.fromkeys(recipients, 1)
    rows = await delivery.rows()
    assert {row.status for row in rows} == {"sent"}
    assert all(row.attempts == 3 for row in rows)
    assert all(row.html_body is None and row.text_body is None for row in rows)
    for message in delivery.ses.messages():
        [recipient] = message["destinations"]["ToAddresses"]
        assert extract_code(message["body"]) == delivery.codes[recipient]
    assert (
        sample("taxease_mails_total", kind="email_verification", outcome="retried")
        == retried_before + 24
    )


async def test_a_burst_of_throttling_delivers_all_and_none_twice(delivery: Delivery) -> None:
    recipients = await delivery.queue(10)
    worker = delivery.worker()
    transient_before = sample(
        "taxease_mail_failures_total", kind="email_verification", reason_class="transient"
    )
    # 15 throttled answers: the SDK's one quick retry absorbs some, the outbox the rest.
    delivery.proxy.fail_next(15, THROTTLED)

    await worker.run_once()
    for _ in range(5):
        if (await delivery.statuses())["pending"] == 0:
            break
        delivery.clock.advance(PAST_BACKOFF)
        await worker.run_once()

    assert (await delivery.statuses()) == {"sent": 10}
    assert delivery.delivered() == dict.fromkeys(recipients, 1)
    assert delivery.proxy.count("TooManyRequestsException") == 15
    assert delivery.proxy.count("forwarded") == 10
    retried = (
        sample("taxease_mail_failures_total", kind="email_verification", reason_class="transient")
        - transient_before
    )
    assert retried == sum(row.attempts - 1 for row in await delivery.rows())


async def test_retry_after_an_ambiguous_failure_is_logged_with_its_key_and_resends_the_same_code(
    delivery: Delivery, caplog: pytest.LogCaptureFixture
) -> None:
    [recipient] = await delivery.queue(1)
    worker = delivery.worker()
    # SES accepts the mail but the answer is lost; the SDK's own retry is lost too.
    delivery.proxy.fail_next(1, FORWARD_THEN_DROP)
    delivery.proxy.fail_next(1, DROP)

    await worker.run_once()
    [row] = await delivery.rows()
    assert row.status == "pending"
    assert row.last_error is not None
    assert row.last_error.startswith("possibly sent: ConnectionClosedError")

    delivery.clock.advance(PAST_BACKOFF)
    with caplog.at_level(logging.WARNING, logger="taxease_auth.mail.worker"):
        await worker.run_once()

    [retry_log] = [r for r in caplog.records if "retry of possibly-sent message" in r.getMessage()]
    assert row.idempotency_key in retry_log.getMessage()
    [row] = await delivery.rows()
    assert row.status == "sent"
    # Two copies reached SES: the same mail, the same code, never a new one.
    copies = delivery.ses.messages(recipient)
    assert len(copies) == 2
    assert {extract_code(m["body"]) for m in copies} == {delivery.codes[recipient]}
    assert copies[0]["body"] == copies[1]["body"]


@pytest.mark.parametrize(
    ("error", "possibly_sent"),
    [
        (botocore.exceptions.ReadTimeoutError(endpoint_url=URL), True),
        (botocore.exceptions.ConnectionClosedError(endpoint_url=URL), True),
        (botocore.exceptions.EndpointConnectionError(endpoint_url=URL), False),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url=URL), False),
    ],
)
def test_network_failures_after_the_request_left_may_hide_an_accepted_mail(
    error: botocore.exceptions.BotoCoreError, possibly_sent: bool
) -> None:
    classified = classify_botocore_error(error)
    assert isinstance(classified, TransientSendError)
    assert classified.possibly_sent is possibly_sent


@pytest.mark.parametrize(
    ("code", "status", "possibly_sent"),
    [
        ("InternalFailure", 500, True),
        ("SomethingNew", 502, True),
        ("ServiceUnavailable", 503, False),
        ("TooManyRequestsException", 429, False),
        ("Throttling", 400, False),
    ],
)
def test_only_server_faults_may_hide_an_accepted_mail(
    code: str, status: int, possibly_sent: bool
) -> None:
    error = botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendEmail",
    )
    classified = classify_client_error(error)
    assert isinstance(classified, TransientSendError)
    assert classified.possibly_sent is possibly_sent


async def test_a_code_that_expires_while_ses_is_down_is_never_sent(delivery: Delivery) -> None:
    await delivery.queue(3)
    worker = delivery.worker()
    expired_before = sample("taxease_mails_total", kind="email_verification", outcome="expired")
    delivery.proxy.fail_sends(UNAVAILABLE)
    await worker.run_once()
    attempts_seen = delivery.proxy.count()

    delivery.proxy.heal()
    delivery.clock.advance(timedelta(minutes=5, seconds=1))
    await worker.run_once()

    assert (await delivery.statuses()) == {"expired": 3}
    assert delivery.proxy.count() == attempts_seen  # not even tried again
    assert delivery.delivered() == {}
    assert all(row.html_body is None and row.text_body is None for row in await delivery.rows())
    assert (
        sample("taxease_mails_total", kind="email_verification", outcome="expired")
        == expired_before + 3
    )


# --- permanent and account-wide failures -------------------------------------------------


async def test_a_rejected_recipient_fails_that_row_once_and_the_others_go(
    delivery: Delivery,
) -> None:
    first, *others = await delivery.queue(3)
    worker = delivery.worker(concurrency=1)
    permanent_before = sample(
        "taxease_mail_failures_total", kind="email_verification", reason_class="permanent"
    )
    delivery.proxy.fail_next(1, recipient_not_verified(first))

    await worker.run_once()
    delivery.clock.advance(PAST_BACKOFF)
    assert await worker.run_once() == 0  # nothing left to try: no retry storm

    rejected, *sent = await delivery.rows()
    assert rejected.status == "failed"
    assert rejected.attempts == 1
    assert rejected.last_error is not None
    assert rejected.last_error.startswith("MessageRejected: Email address is not verified")
    assert [row.status for row in sent] == ["sent", "sent"]
    assert delivery.delivered() == dict.fromkeys(others, 1)
    assert delivery.proxy.count() == 3
    assert not worker.breaker.is_open
    assert (
        sample("taxease_mail_failures_total", kind="email_verification", reason_class="permanent")
        == permanent_before + 1
    )


async def test_an_unverified_sender_fails_one_row_and_stops_delivery(
    delivery: Delivery,
) -> None:
    delivery.ses.client().delete_email_identity(EmailIdentity=SENDER)
    await delivery.queue(4)
    worker = delivery.worker(concurrency=1)
    account_before = sample(
        "taxease_mail_failures_total", kind="email_verification", reason_class="account_wide"
    )

    await worker.run_once()
    await worker.run_once()  # the breaker is open and no probe is due: nothing is tried

    failed, *waiting = await delivery.rows()
    assert failed.status == "failed"
    assert failed.attempts == 1
    assert failed.last_error is not None
    assert failed.last_error.startswith("MessageRejected: Email address not verified")
    assert [(row.status, row.attempts) for row in waiting] == [("pending", 0)] * 3
    assert delivery.proxy.count() == 1
    assert delivery.delivered() == {}
    assert worker.breaker.is_open
    assert sample("taxease_mail_circuit_open") == 1
    assert (
        sample(
            "taxease_mail_failures_total", kind="email_verification", reason_class="account_wide"
        )
        == account_before + 1
    )


async def test_sends_in_flight_when_the_breaker_opens_go_back_to_the_queue(
    delivery: Delivery,
) -> None:
    await delivery.queue(5)
    worker = delivery.worker(concurrency=5)
    # All five must be in flight before the first answer: a second of latency leaves room for
    # dispatching them even on a loaded 2-core machine (0.1 s did not, under CI load).
    delivery.proxy.set_latency(1.0)
    delivery.proxy.fail_sends(SENDING_PAUSED)

    await worker.run_once()

    assert (await delivery.statuses()) == {"failed": 1, "pending": 4}
    assert delivery.proxy.count() == 5
    assert worker.breaker.is_open


async def test_account_wide_error_opens_the_breaker_which_probes_and_closes(
    delivery: Delivery, caplog: pytest.LogCaptureFixture
) -> None:
    recipients = await delivery.queue(4)
    worker = delivery.worker(concurrency=1, probe_seconds=PROBE_SECONDS)
    delivery.proxy.fail_sends(SENDING_PAUSED)

    with caplog.at_level(logging.WARNING, logger="taxease_auth.mail.worker"):
        delivery.start(worker)
        await eventually(lambda: worker.breaker.is_open, "the breaker to open")
        assert sample("taxease_mail_circuit_open") == 1
        # A few probe periods: one mail tried per period, the others untouched.
        await asyncio.sleep(PROBE_SECONDS * 3.5)
        statuses = await delivery.statuses()
        assert statuses == {"failed": 1, "pending": 3}
        assert 2 <= delivery.proxy.count() <= 6
        assert delivery.delivered() == {}

        delivery.proxy.heal()
        await eventually(_sent_count(delivery, 3), "the queued mails after the breaker closed")

    assert not worker.breaker.is_open
    assert sample("taxease_mail_circuit_open") == 0
    failed = [row for row in await delivery.rows() if row.status == "failed"]
    assert len(failed) == 1
    assert failed[0].last_error is not None
    assert failed[0].last_error.startswith("SendingPausedException")
    assert failed[0].recipient == recipients[0]
    assert delivery.delivered() == dict.fromkeys(recipients[1:], 1)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("ALARM: mail delivery stopped") for m in messages)
    assert any("mail delivery resumed" in m for m in messages)
    # Alarms name the mail by its masked address only.
    assert not any(recipients[0] in m for m in messages)


def _sent_count(delivery: Delivery, count: int) -> Callable[[], Any]:
    async def check() -> bool:
        return (await delivery.statuses())["sent"] == count

    return check


# --- crash safety and shutdown -----------------------------------------------------------


async def test_rows_of_a_worker_killed_mid_batch_are_claimed_again_after_the_lease(
    delivery: Delivery,
) -> None:
    recipients = await delivery.queue(5)
    killed = delivery.worker(concurrency=5)
    # The sends hang, then their connections drop: SES never gets them. The hang is long
    # enough that all five are dispatched before any first attempt ends, even under load.
    delivery.proxy.set_latency(1.0)
    delivery.proxy.fail_sends(DROP)
    task = asyncio.create_task(killed.run())
    await eventually(lambda: delivery.proxy.count() >= 5, "five sends in flight")

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A dead process's requests die with it; here the SDK threads finish theirs (each send
    # and its one SDK retry), and they must not reach SES either.
    await eventually(lambda: delivery.proxy.count() == 10, "the abandoned calls to end")
    await asyncio.sleep(0.3)

    rows = await delivery.rows()
    assert [(row.status, row.attempts, row.leased_by) for row in rows] == [
        ("pending", 0, killed.worker_id)
    ] * 5
    delivery.proxy.heal()
    delivery.proxy.set_latency(0)
    successor = delivery.worker()
    assert await successor.run_once() == 0  # the leases still hold

    delivery.clock.advance(timedelta(seconds=delivery.settings.outbox_lease_seconds + 1))
    assert await successor.run_once() == 5

    assert (await delivery.statuses()) == {"sent": 5}
    assert delivery.delivered() == dict.fromkeys(recipients, 1)


async def test_stop_finishes_the_send_in_flight(delivery: Delivery) -> None:
    [recipient] = await delivery.queue(1)
    worker = delivery.worker()
    delivery.proxy.set_latency(1.0)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: delivery.proxy.count() == 1, "the send to start")

    await worker.stop()
    await asyncio.wait_for(task, timeout=WAIT_SECONDS)

    [row] = await delivery.rows()
    assert row.status == "sent"
    assert row.lease_expires_at is None
    assert delivery.delivered() == {recipient: 1}


@pytest.mark.sqlite_only
async def test_only_one_worker_delivers_from_an_sqlite_database(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    clock = ManualClock()
    first_console = ConsoleBackend(stream=io.StringIO())
    standby_console = ConsoleBackend(stream=io.StringIO())
    renderer = MailRenderer("TaxEase")

    async def queue(recipient: str) -> None:
        mail = renderer.render(MailKind.PASSWORD_CHANGED, first_name="Test")
        async with transaction_on(engine) as tx:
            await outbox.enqueue(
                tx,
                recipient=recipient,
                kind=MailKind.PASSWORD_CHANGED,
                mail=mail,
                otp_id=None,
                send_before=clock.now() + timedelta(minutes=5),
                now=clock.now(),
            )

    first = build_worker(settings, sessions=sessions, backend=first_console, clock=clock)
    with pytest.raises(outbox.OutboxLocked, match="another delivery worker"):
        build_worker(settings, sessions=sessions, backend=standby_console, clock=clock,
                     standby=False)  # fmt: skip
    standby = build_worker(settings, sessions=sessions, backend=standby_console, clock=clock)
    first_task = asyncio.create_task(first.run())
    standby_task = asyncio.create_task(standby.run())
    try:
        for i in range(3):
            await queue(f"first{i}@example.org")
        first.wake()
        standby.wake()
        await eventually(lambda: len(first_console.recent()) == 3, "the first worker's mail")
        await asyncio.sleep(0.2)
        assert standby_console.recent() == []

        await first.stop()
        await first_task
        await queue("later@example.org")
        await eventually(lambda: len(standby_console.recent()) == 1, "the standby to take over")
        assert [m.recipient for m in standby_console.recent()] == ["later@example.org"]
        assert len(first_console.recent()) == 3
    finally:
        await first.stop()
        await standby.stop()
        await asyncio.gather(first_task, standby_task)
        await engine.dispose()


@pytest.mark.sqlite_only
def test_worker_command_refuses_to_run_beside_another_worker_on_sqlite(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    lock = outbox.sqlite_worker_lock(settings)
    assert lock is not None
    lock.acquire()
    try:
        result = CliRunner().invoke(
            cli_app,
            ["worker"],
            env={"DATABASE_URL": settings.database_url, "DEVELOPMENT_MODE": "true"},
        )
    finally:
        lock.release()

    assert result.exit_code == 2, result.output
    assert "another delivery worker already runs on this SQLite database" in result.stderr


# --- rate ------------------------------------------------------------------------------------


@pytest.mark.timing
@pytest.mark.usefixtures("worker_process_heap")
async def test_pacing_keeps_under_max_send_rate_with_slow_ses(delivery: Delivery) -> None:
    recipients = await delivery.queue(60)
    # SES takes 100 ms a call and throttles past 20/s: one call at a time would manage 10/s.
    delivery.proxy.set_latency(0.1)
    delivery.proxy.set_max_rate(20)
    worker = delivery.worker(rate=20.0)

    delivery.start(worker)
    await eventually(_sent_count(delivery, 60), "60 mails", seconds=20)

    assert delivery.proxy.count("throttled") == 0
    assert delivery.delivered() == dict.fromkeys(recipients, 1)
    arrivals = [s.at for s in delivery.proxy.sends() if s.outcome == "forwarded"]
    assert max_in_any_window(arrivals) <= 20
    achieved = (len(arrivals) - 1) / (max(arrivals) - min(arrivals))
    assert 0.85 * 20 <= achieved <= 20


async def test_the_pace_comes_from_ses_unless_overridden(delivery: Delivery) -> None:
    from_quota = delivery.worker(rate=None)
    await from_quota.run_once()
    # moto has no GetAccount (404): the classic GetSendQuota answers 1/s.
    assert from_quota.send_rate == 1.0

    delivery.proxy.answer(
        "GET",
        "/v2/email/account",
        200,
        {"SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 0.0}},
    )
    from_account = delivery.worker(rate=None)
    await from_account.run_once()
    assert from_account.send_rate == 14.0
    assert sample("taxease_mail_max_send_rate") == 14.0

    overridden = delivery.worker(rate=3.0)
    await overridden.run_once()
    assert overridden.send_rate == 3.0


# --- housekeeping and gauges ---------------------------------------------------------------


async def test_housekeeping_expires_queued_codes_and_clears_dead_bodies(
    delivery: Delivery,
) -> None:
    [rejected] = await delivery.queue(1, prefix="rejected")
    worker = delivery.worker()
    delivery.proxy.fail_next(1, recipient_not_verified(rejected))
    await worker.run_once()
    await delivery.queue(2, prefix="waiting")  # never claimed: no worker runs after this

    await worker.housekeeping()
    failed, *waiting = await delivery.rows()
    assert failed.status == "failed"
    assert failed.html_body is not None  # kept for `outbox retry` while the code lives
    assert [row.status for row in waiting] == ["pending", "pending"]

    delivery.clock.advance(timedelta(minutes=5, seconds=1))
    await worker.housekeeping()

    failed, *waiting = await delivery.rows()
    assert failed.status == "failed"
    assert failed.html_body is None
    assert failed.text_body is None
    assert [row.status for row in waiting] == ["expired", "expired"]
    assert all(row.html_body is None and row.text_body is None for row in waiting)
    assert len(delivery.ses.messages()) == 0


async def test_housekeeping_reports_pending_count_and_oldest_age(delivery: Delivery) -> None:
    worker = delivery.worker()
    await worker.housekeeping()
    assert sample("taxease_outbox_pending") == 0
    assert sample("taxease_outbox_oldest_pending_age_seconds") == 0

    await delivery.queue(3)
    delivery.clock.advance(timedelta(seconds=30))
    await delivery.queue(1)
    await worker.housekeeping()

    assert sample("taxease_outbox_pending") == 4
    assert sample("taxease_outbox_oldest_pending_age_seconds") == 30
