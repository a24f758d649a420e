"""`taxease-auth doctor`'s SES feedback checks (DESIGN.md §10), each with its fix:

- the configuration set publishes BOUNCE, COMPLAINT and DELIVERY events to SNS;
- the feedback queue (SES_FEEDBACK_QUEUE_URL) is reachable, with a dead-letter queue;
- SES's account-level suppression list is on for BOUNCE and COMPLAINT;
- the bounce and complaint rates are under their warn levels.

Where the endpoint cannot answer (moto implements no event destination read, no GetAccount),
the check says "could not check" and why: UNKNOWN, never a false PASS.
"""

from __future__ import annotations

import asyncio
from typing import Any

import boto3.session
import botocore.config
import botocore.exceptions
from sqlalchemy.exc import SQLAlchemyError

from taxease_auth.config import Settings
from taxease_auth.mail.doctor import Check, Status, ask
from taxease_auth.mail.feedback.reputation import Rates, measure
from taxease_auth.store.db import make_engine
from taxease_auth.store.sql import database_for

REQUIRED_EVENTS = ("BOUNCE", "COMPLAINT", "DELIVERY")
DEPLOY_GUIDE = "docs/deploy.md, 'SES feedback'"


def feedback_checks(settings: Settings) -> list[Check]:
    """The feedback checks for an SES (or SES SMTP) set-up; never raises for an answer."""
    if not settings.ses_feedback_queue_url:
        return [
            Check(
                "SES feedback",
                Status.UNKNOWN,
                "not set up (SES_FEEDBACK_QUEUE_URL unset): bounces and complaints go unseen, "
                "and nothing warns before SES reviews the account",
                f"set up the configuration set, topic and queue ({DEPLOY_GUIDE}) and set "
                "AWS_SES_CONFIGURATION_SET and SES_FEEDBACK_QUEUE_URL",
            ),
            reputation_check(settings),
        ]
    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=3, read_timeout=5
    )
    try:
        session = boto3.session.Session(region_name=settings.aws_region, **settings.aws_credentials)
        endpoint = settings.aws_endpoint_url or None
        sesv2: Any = session.client("sesv2", endpoint_url=endpoint, config=config)
        sqs: Any = session.client("sqs", endpoint_url=endpoint, config=config)
    except botocore.exceptions.BotoCoreError as error:
        reason = f"could not check: {type(error).__name__}"
        return [
            Check(name, Status.UNKNOWN, reason)
            for name in ("event destination", "feedback queue", "account suppression")
        ] + [reputation_check(settings)]
    try:
        return [
            event_destination_check(sesv2, settings),
            queue_check(sqs, settings),
            account_suppression_check(sesv2),
            reputation_check(settings),
        ]
    finally:
        sesv2.close()
        sqs.close()


def event_destination_check(sesv2: Any, settings: Settings) -> Check:
    name = settings.aws_ses_configuration_set
    if not name:
        return Check(
            "event destination",
            Status.FAIL,
            "AWS_SES_CONFIGURATION_SET is unset: mail is sent without the configuration set "
            "that publishes its events, so the feedback queue stays empty",
            f"set AWS_SES_CONFIGURATION_SET to the set that publishes to the queue's topic "
            f"({DEPLOY_GUIDE})",
        )
    answer = ask(sesv2.get_configuration_set_event_destinations, ConfigurationSetName=name)
    if answer.data is None:
        return Check(
            "event destination",
            Status.UNKNOWN,
            f"could not check {name}'s event destinations: {answer.why}",
            f"`aws sesv2 get-configuration-set-event-destinations --configuration-set-name {name}`",
        )
    published: set[str] = set()
    for destination in answer.data.get("EventDestinations", []):
        if destination.get("Enabled") and destination.get("SnsDestination"):
            published |= {str(kind).upper() for kind in destination.get("MatchingEventTypes", [])}
    missing = [kind for kind in REQUIRED_EVENTS if kind not in published]
    if missing:
        return Check(
            "event destination",
            Status.FAIL,
            f"{name} does not publish {', '.join(missing)} to SNS",
            f"add an enabled SNS event destination to {name} matching BOUNCE, COMPLAINT, "
            f"DELIVERY, DELIVERY_DELAY, REJECT, RENDERING_FAILURE ({DEPLOY_GUIDE})",
        )
    return Check(
        "event destination", Status.PASS, f"{name} publishes {', '.join(sorted(published))} to SNS"
    )


def queue_check(sqs: Any, settings: Settings) -> Check:
    answer = ask(
        sqs.get_queue_attributes,
        QueueUrl=settings.ses_feedback_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "RedrivePolicy"],
    )
    if answer.data is None:
        return Check(
            "feedback queue",
            Status.FAIL,
            f"SES_FEEDBACK_QUEUE_URL cannot be read: {answer.why}",
            "check the URL, the region, and that the worker's IAM identity may sqs:ReceiveMessage, "
            f"sqs:DeleteMessage and sqs:GetQueueAttributes on it ({DEPLOY_GUIDE})",
        )
    attributes = answer.data.get("Attributes", {})
    waiting = attributes.get("ApproximateNumberOfMessages", "?")
    if "RedrivePolicy" not in attributes:
        return Check(
            "feedback queue",
            Status.FAIL,
            f"reachable ({waiting} messages waiting) but without a dead-letter queue: an "
            "unreadable message would come back forever",
            f"give it a redrive policy to a dead-letter queue, maxReceiveCount 5 ({DEPLOY_GUIDE})",
        )
    return Check(
        "feedback queue",
        Status.PASS,
        f"reachable, {waiting} waiting, dead-letter queue set",
    )


def account_suppression_check(sesv2: Any) -> Check:
    answer = ask(sesv2.get_account)
    if answer.data is None:
        return Check(
            "account suppression",
            Status.UNKNOWN,
            f"could not check SES's account-level suppression list: {answer.why}",
            "`aws sesv2 get-account` shows SuppressionAttributes",
        )
    reasons = set((answer.data.get("SuppressionAttributes") or {}).get("SuppressedReasons", []))
    missing = [reason for reason in ("BOUNCE", "COMPLAINT") if reason not in reasons]
    if missing:
        return Check(
            "account suppression",
            Status.FAIL,
            f"SES's account-level suppression list is off for {', '.join(missing)}",
            "`aws sesv2 put-account-suppression-attributes --suppressed-reasons BOUNCE COMPLAINT`",
        )
    return Check("account suppression", Status.PASS, "on for BOUNCE and COMPLAINT")


def reputation_check(settings: Settings) -> Check:
    away: tuple[type[Exception], ...] = (SQLAlchemyError, OSError, *_driver_errors())
    try:
        rates = asyncio.run(_measure(settings))
    except away as error:
        return Check("reputation", Status.UNKNOWN, f"could not check: {type(error).__name__}")
    return judge(rates)


def judge(rates: Rates) -> Check:
    if not rates.accepted:
        return Check("reputation", Status.PASS, "no mail accepted by SES yet")
    if rates.bounce_too_high or rates.complaint_too_high:
        return Check(
            "reputation",
            Status.FAIL,
            rates.describe(),
            "find the bounced and complaining addresses (`taxease-auth suppression list`, "
            "`taxease-auth why EMAIL`) and what sends to them; SES reviews the account at 5 % "
            "bounces or 0.1 % complaints and may pause sending at 10 % / 0.5 %",
        )
    return Check("reputation", Status.PASS, rates.describe())


async def _measure(settings: Settings) -> Rates:
    engine = make_engine(settings)
    database = database_for(engine, pool_size=1)
    try:
        return await measure(database, settings)
    finally:
        await database.close()
        await engine.dispose()


def _driver_errors() -> tuple[type[Exception], ...]:
    import sqlite3

    errors: list[type[Exception]] = [sqlite3.Error]
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - a SQLite-only install
        return tuple(errors)
    errors += [asyncpg.PostgresError, asyncpg.InterfaceError]
    return tuple(errors)
