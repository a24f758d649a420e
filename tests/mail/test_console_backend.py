"""ConsoleBackend: prints the mail with its code and keeps the newest few."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from taxease_auth.clock import ManualClock
from taxease_auth.mail.backends.console import ConsoleBackend
from taxease_auth.mail.message import Message

pytestmark = pytest.mark.database_independent


def make_message(number: int = 1) -> Message:
    return Message(
        sender="TaxEase <no-reply@taxease.localhost>",
        recipient=f"user{number}@example.org",
        subject="Your TaxEase Login OTP",
        html="<p>Your code: 048213</p>",
        text="Your code:\n\n    048213\n",
        kind="login",
        idempotency_key=f"key-{number}",
    )


async def test_send_writes_addresses_subject_and_code_to_the_stream():
    stream = io.StringIO()
    backend = ConsoleBackend(stream=stream)

    result = await backend.send(make_message())

    output = stream.getvalue()
    assert "To: user1@example.org" in output
    assert "Subject: Your TaxEase Login OTP" in output
    assert "048213" in output
    assert result.provider_message_id == "console-key-1"


async def test_default_stream_is_stdout_at_send_time(capsys: pytest.CaptureFixture[str]):
    backend = ConsoleBackend()

    await backend.send(make_message())

    assert "048213" in capsys.readouterr().out


async def test_recent_is_newest_first_and_bounded_by_keep():
    backend = ConsoleBackend(stream=io.StringIO(), keep=3)

    for number in range(1, 6):
        await backend.send(make_message(number))

    assert [message.idempotency_key for message in backend.recent()] == ["key-5", "key-4", "key-3"]


async def test_recent_is_empty_before_any_send_and_aclose_is_harmless():
    backend = ConsoleBackend(stream=io.StringIO())

    assert backend.recent() == []
    await backend.aclose()


def test_negative_keep_is_refused():
    with pytest.raises(ValueError, match="keep"):
        ConsoleBackend(keep=-1)


async def test_kept_mails_carry_a_stable_number_and_the_time_they_were_printed():
    clock = ManualClock(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    backend = ConsoleBackend(stream=io.StringIO(), keep=2, clock=clock)

    for number in range(1, 4):
        await backend.send(make_message(number))
        clock.advance(timedelta(seconds=1))

    kept = backend.kept()
    assert [mail.number for mail in kept] == [3, 2]
    assert kept[0].sent_at == datetime(2026, 1, 2, 3, 4, 7, tzinfo=UTC)
    assert backend.find(2) is kept[1]
    assert backend.find(1) is None  # dropped: only the last `keep` are remembered
    assert backend.keep == 2
