"""`taxease-auth why` tells each mail's story from SES's events; `taxease-auth suppression`
manages the list, each change audited; removal lets codes go to the address again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from taxease_auth.cli import app as cli
from taxease_auth.store.models import OutboxStatus
from tests.conftest import SesInbox, SettingsFactory, StartApp
from tests.mail.feedback import examples
from tests.mail.feedback.conftest import FeedbackQueues
from tests.mail.feedback.helpers import events, eventually, send_code, suppressed
from tests.mail.feedback.test_end_to_end import feedback_app


@pytest.fixture(autouse=True)
def _empty_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads ./.env: run where there is none."""
    monkeypatch.chdir(tmp_path)


async def run(args: list[str], database_url: str) -> Result:
    env = {"COLUMNS": "200", "DEVELOPMENT_MODE": "true", "DATABASE_URL": database_url}
    return await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)


async def test_why_tells_delivered_bounced_and_suppressed_stories(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    feedback_queues: FeedbackQueues,
    database_url: str,
) -> None:
    running = await feedback_app(start_app, ses, ses_settings, feedback_queues, "raw")
    published = {
        "arrived@example.org": examples.DELIVERY,
        "nosuchuser@example.org": examples.BOUNCE_PERMANENT,
        "slowbox@example.org": examples.DELIVERY_DELAY,
    }
    for email, event in published.items():
        message_id = await send_code(running, email)
        feedback_queues.publish(examples.for_message(event, message_id, email))

    async def recorded() -> bool:
        return len(await events(running)) == len(published)

    await eventually(recorded)

    delivered = (await run(["why", "arrived@example.org"], database_url)).stdout
    assert "delivered to the recipient's mail server — 250 2.6.0 Message received" in delivered
    assert "SES says delivered" in delivered
    assert "reached the recipient's mail server" in delivered

    bounced = (await run(["why", "nosuchuser@example.org"], database_url)).stdout
    assert "bounced (Permanent): the address does not exist — 550 5.1.1 user unknown" in bounced
    assert "suppressed  since" in bounced
    assert "(bounce): Bounce Permanent/General 5.1.1" in bounced
    assert "verdict     the address is on the suppression list (bounce" in bounced
    assert "taxease-auth suppression remove nosuchuser@example.org" in bounced

    delayed = (await run(["why", "slowbox@example.org"], database_url)).stdout
    assert "delayed: mailbox full, SES keeps trying until 2020-06-16 00:25:40 UTC" in delayed


async def test_suppression_add_list_remove_are_audited_and_removal_lets_codes_go(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    feedback_queues: FeedbackQueues,
    database_url: str,
) -> None:
    running = await feedback_app(start_app, ses, ses_settings, feedback_queues, "raw")
    email = "support-case@example.org"
    await send_code(running, email)

    added = await run(
        ["suppression", "add", " Support-Case@Example.org", "--reason", "ticket 42"], database_url
    )
    assert added.exit_code == 0, added.output
    again = await run(["suppression", "add", email], database_url)
    assert again.exit_code == 1
    listing = (await run(["suppression", "list"], database_url)).stdout
    assert f"manual    {email}  ticket 42" in listing
    assert (await suppressed(running))[email].reason == "manual"

    # Suppressed: the next code is not sent.
    answer = await running.client.post(
        "/api/v1/auth/request-otp", json={"email": email, "purpose": "email_verification"}
    )
    assert answer.status_code == 202
    rows = await running.settled_outbox()
    assert [r.status for r in rows if r.recipient == email][-1] == OutboxStatus.SUPPRESSED

    removed = await run(["suppression", "remove", email], database_url)
    assert removed.exit_code == 0, removed.output
    assert (await run(["suppression", "remove", email], database_url)).exit_code == 1
    assert await suppressed(running) == {}

    # Removed: codes go again.
    answer = await running.client.post(
        "/api/v1/auth/request-otp", json={"email": email, "purpose": "email_verification"}
    )
    assert answer.status_code == 202
    await ses.wait_for(email, count=2)

    trail = (await run(["audit", "--email", email], database_url)).stdout
    assert "mail_suppression added" in trail
    assert "mail_suppression removed" in trail
