"""SES feedback (DESIGN.md §10): events read from SQS, recorded against their mails, acted on.

``events`` parses SES's JSON (pure functions), ``effects`` decides what an event changes and
applies it in one transaction, ``consumer`` long-polls the queue, ``reputation`` keeps the
bounce and complaint rates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taxease_auth.clock import Clock
    from taxease_auth.config import Settings
    from taxease_auth.mail.feedback.consumer import FeedbackConsumer


def feedback_consumer(settings: Settings, *, clock: Clock) -> FeedbackConsumer | None:
    """The consumer SES_FEEDBACK_QUEUE_URL asks for, or None when it is not set.

    The consumer's module is imported only then: it loads boto3 (~10 MB resident), which a
    server that does not read the queue (or send through SES) must not carry.
    """
    if not settings.ses_feedback_queue_url:
        return None
    from taxease_auth.mail.feedback.consumer import FeedbackConsumer

    return FeedbackConsumer(settings, clock=clock)
