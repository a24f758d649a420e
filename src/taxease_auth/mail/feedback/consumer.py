"""The feedback consumer: long-polls the SES feedback queue and applies each event
(DESIGN.md §10, "Path").

One SQS message is one event, applied in one transaction; the message is deleted only after
that transaction committed, so a crash in between reads it again, and the second reading
changes nothing (``store/mail_events``: one row per event). A message that cannot be read is
logged and left in the queue: its redrive policy moves it to the dead-letter queue after a few
receipts. An SNS envelope from a topic other than SES_FEEDBACK_TOPIC_ARN (when set) is deleted
unread. SQS being away never stops the loop: it waits, tries again, and catches up; the
delivery worker beside it keeps sending meanwhile. Several consumers may read one queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import boto3.session
import botocore.config
import botocore.exceptions
from sqlalchemy.exc import SQLAlchemyError

from taxease_auth import metrics
from taxease_auth.auth.emails import mask_email
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.mail.feedback import effects
from taxease_auth.mail.feedback.events import (
    EventType,
    FeedbackEvent,
    UnreadableMessage,
    parse_event,
    unwrap,
)
from taxease_auth.mail.feedback.reputation import ReputationGuard
from taxease_auth.mail.stopping import until_stopped
from taxease_auth.store.mail_events import Outcome
from taxease_auth.store.sql import Database

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# SQS's longest wait and largest batch: one request per ten events at most, none while idle.
WAIT_SECONDS = 20
MAX_MESSAGES = 10
# While SQS is away: first pause, doubled up to the longest.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
# The rates are measured again at most this often while events come in.
REPUTATION_EVERY_SECONDS = 5.0


class Disposition(enum.Enum):
    DELETE = "delete"  # applied (or nothing to apply): gone from the queue
    KEEP = "keep"  # not applied: it comes back after its visibility timeout


def sqs_client(settings: Settings, *, wait_seconds: float) -> Any:
    """An SQS client with the service's credentials, region and endpoint (AWS_ENDPOINT_URL)."""
    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": 2},
        connect_timeout=5,
        # A long poll holds the request open for up to wait_seconds.
        read_timeout=wait_seconds + 10,
        max_pool_connections=4,
    )
    return boto3.session.Session().client(
        "sqs",
        region_name=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url or None,
        config=config,
        **settings.aws_credentials,
    )


async def _in_daemon_thread(function: Callable[[], _T]) -> _T:
    """Run a blocking call in a daemon thread: a long poll abandoned at shutdown must not hold
    the process (the default executor is joined at exit; a daemon thread is not)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        outcome: tuple[_T | None, BaseException | None]
        try:
            outcome = (function(), None)
        except BaseException as error:  # handed to the awaiting coroutine as is
            outcome = (None, error)
        # The loop may have closed meanwhile (an abandoned poll at shutdown): nobody waits.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name="sqs-feedback", daemon=True).start()
    return await future


class FeedbackConsumer:
    """Reads SES_FEEDBACK_QUEUE_URL until ``stop()``; run by the delivery worker."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        wait_seconds: int = WAIT_SECONDS,
        max_messages: int = MAX_MESSAGES,
        retry_first_seconds: float = RETRY_FIRST_SECONDS,
        client: Any = None,
    ) -> None:
        if not settings.ses_feedback_queue_url:
            raise ValueError("SES_FEEDBACK_QUEUE_URL is not set")
        self._queue_url = settings.ses_feedback_queue_url
        self._topic_arn = settings.ses_feedback_topic_arn
        self._secret_key = settings.signing_key
        self._clock = clock
        self._wait_seconds = wait_seconds
        self._max_messages = max_messages
        self._retry_first = retry_first_seconds
        self._client = (
            client if client is not None else sqs_client(settings, wait_seconds=wait_seconds)
        )
        self.reputation = ReputationGuard(settings)
        self._stopping = asyncio.Event()
        self._reputation_due = 0.0
        self._away_since: float | None = None

    async def stop(self) -> None:
        self._stopping.set()

    async def run(self, database: Database) -> None:
        """Consume until ``stop()``. A long poll in progress is abandoned (its messages, if
        any, come back after their visibility timeout)."""
        logger.info("SES feedback consumer started on its queue")
        pause = self._retry_first
        loop = asyncio.get_running_loop()
        try:
            await self._refresh_reputation(database, force=True)
            while not self._stopping.is_set():
                try:
                    messages = await until_stopped(self._receive(), self._stopping)
                except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                    self._away(e, loop.time())
                    await self._pause(pause)
                    pause = min(pause * 2, RETRY_MAX_SECONDS)
                    continue
                if messages is None:  # stopping
                    break
                self._back(loop.time())
                pause = self._retry_first
                await self.handle_batch(database, messages)
        finally:
            logger.info("SES feedback consumer stopped")

    async def handle_batch(self, database: Database, messages: list[dict[str, Any]]) -> int:
        """Apply each message, then delete those applied; returns how many were deleted."""
        receipts: list[dict[str, str]] = []
        for number, message in enumerate(messages):
            try:
                disposition = await self._handle(database, message)
            except Exception as error:  # one message never stops the loop
                # Only the type: a driver's message may quote the statement's values.
                logger.error(
                    "SES feedback message %s failed (%s): left for the queue's redrive policy",
                    message.get("MessageId"),
                    type(error).__name__,
                )
                disposition = Disposition.KEEP
            if disposition is Disposition.DELETE:
                receipts.append({"Id": str(number), "ReceiptHandle": message["ReceiptHandle"]})
        if receipts:
            await self._delete(receipts)
        await self._refresh_reputation(database)
        return len(receipts)

    async def _handle(self, database: Database, message: dict[str, Any]) -> Disposition:
        sqs_id = str(message.get("MessageId", ""))[:128] or None
        try:
            queued = unwrap(str(message.get("Body", "")))
            if self._topic_arn and queued.topic_arn not in (None, self._topic_arn):
                metrics.FEEDBACK_EVENTS.labels(event_type="unknown", outcome="foreign_topic").inc()
                logger.warning(
                    "SES feedback message %s comes from another SNS topic: deleted unread", sqs_id
                )
                return Disposition.DELETE
            event = parse_event(queued.document)
        except UnreadableMessage as error:
            metrics.FEEDBACK_UNREADABLE.inc()
            logger.error(
                "SES feedback message %s cannot be read (%s): left for the queue's redrive policy",
                sqs_id,
                error,
            )
            return Disposition.KEEP
        if event.event_type is EventType.OTHER:
            metrics.FEEDBACK_EVENTS.labels(event_type="other", outcome="ignored").inc()
            return Disposition.DELETE
        try:
            async with database.transaction() as tx:
                applied = await effects.apply(
                    tx,
                    event,
                    sqs_message_id=sqs_id,
                    now=self._clock.now(),
                    secret_key=self._secret_key,
                )
        except self._database_away(database) as error:
            logger.error(
                "SES feedback message %s not applied, the database is away (%s): it comes back",
                sqs_id,
                type(error).__name__,
            )
            return Disposition.KEEP
        for item in applied:
            metrics.FEEDBACK_EVENTS.labels(
                event_type=event.event_type.value, outcome=item.outcome.value
            ).inc()
            self._log(event, item, sqs_id)
        return Disposition.DELETE

    def _log(self, event: FeedbackEvent, item: effects.Applied, sqs_id: str | None) -> None:
        kind = "/".join(part for part in (event.category, event.subtype) if part)
        if item.outcome is Outcome.UNKNOWN:
            logger.info(
                "SES feedback: %s for an unknown message (to %s): dropped",
                event.name,
                mask_email(item.recipient),
            )
            return
        if item.outcome is Outcome.DUPLICATE:
            logger.debug("SES feedback message %s: already recorded", sqs_id)
            return
        logger.info(
            "SES feedback: %s%s for outbox %s (to %s)%s",
            event.name,
            f" ({kind})" if kind else "",
            item.outbox_id,
            mask_email(item.recipient),
            f"; address suppressed ({item.suppressed})" if item.suppressed else "",
        )

    async def _receive(self) -> list[dict[str, Any]]:
        call = functools.partial(
            self._client.receive_message,
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._max_messages,
            WaitTimeSeconds=self._wait_seconds,
        )
        response = await _in_daemon_thread(call)
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    async def _delete(self, receipts: list[dict[str, str]]) -> None:
        call = functools.partial(
            self._client.delete_message_batch, QueueUrl=self._queue_url, Entries=receipts
        )
        try:
            response = await _in_daemon_thread(call)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            # Applied but not deleted: they come back, and change nothing the second time.
            logger.warning("SES feedback: deleting %d messages failed (%s)", len(receipts), error)
            return
        if response.get("Failed"):
            logger.warning("SES feedback: %d messages not deleted", len(response["Failed"]))

    async def _refresh_reputation(self, database: Database, *, force: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        if not force and now < self._reputation_due:
            return
        self._reputation_due = now + REPUTATION_EVERY_SECONDS
        try:
            await self.reputation.refresh(database)
        except self._database_away(database) as error:
            logger.error("SES reputation not measured: %s", type(error).__name__)

    @staticmethod
    def _database_away(database: Database) -> tuple[type[Exception], ...]:
        return (*database.errors, SQLAlchemyError, OSError)

    def _away(self, error: Exception, now: float) -> None:
        if self._away_since is None:
            self._away_since = now
            logger.error(
                "SES feedback queue unreachable (%s): trying again; mail delivery goes on",
                type(error).__name__,
            )

    def _back(self, now: float) -> None:
        if self._away_since is not None:
            logger.warning(
                "SES feedback queue reachable again after %.0f s: catching up",
                now - self._away_since,
            )
            self._away_since = None

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def close(self) -> None:
        self._client.close()
