"""SES feedback events as AWS documents them ("Examples of event data that Amazon SES publishes
to Amazon SNS", SES developer guide; identity notifications from "notification-examples"),
trimmed of headers. ``for_message`` points one at a real message id and recipient."""

from __future__ import annotations

import copy
import json
from typing import Any

_MAIL = {
    "timestamp": "2017-08-05T00:40:02.012Z",
    "source": "Sender Name <sender@example.com>",
    "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/sender@example.com",
    "sendingAccountId": "123456789012",
    "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
    "destination": ["recipient@example.com"],
    "headersTruncated": False,
    "headers": [{"name": "From", "value": "Sender Name <sender@example.com>"}],
    "commonHeaders": {"from": ["Sender Name <sender@example.com>"], "subject": "Message sent"},
    "tags": {"ses:configuration-set": ["ConfigSet"]},
}

BOUNCE_PERMANENT: dict[str, Any] = {
    "eventType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "recipient@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
        "timestamp": "2017-08-05T00:41:02.669Z",
        "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
        "reportingMTA": "dsn; mta.example.com",
    },
    "mail": _MAIL,
}

BOUNCE_TRANSIENT: dict[str, Any] = {
    "eventType": "Bounce",
    "bounce": {
        "bounceType": "Transient",
        "bounceSubType": "MailboxFull",
        "bouncedRecipients": [
            {
                "emailAddress": "recipient@example.com",
                "action": "failed",
                "status": "4.2.2",
                "diagnosticCode": "smtp; 452 4.2.2 mailbox full",
            }
        ],
        "timestamp": "2017-08-05T00:41:02.669Z",
        "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000001",
        "reportingMTA": "dsn; mta.example.com",
    },
    "mail": _MAIL,
}

COMPLAINT: dict[str, Any] = {
    "eventType": "Complaint",
    "complaint": {
        "complainedRecipients": [{"emailAddress": "recipient@example.com"}],
        "timestamp": "2017-08-05T00:41:02.669Z",
        "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000002",
        "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        "complaintFeedbackType": "abuse",
        "arrivalDate": "2017-08-05T00:41:02.669Z",
    },
    "mail": _MAIL,
}

DELIVERY: dict[str, Any] = {
    "eventType": "Delivery",
    "mail": _MAIL,
    "delivery": {
        "timestamp": "2016-10-19T23:20:52.240Z",
        "processingTimeMillis": 546,
        "recipients": ["recipient@example.com"],
        "smtpResponse": "250 2.6.0 Message received",
        "reportingMTA": "mta.example.com",
    },
}

DELIVERY_DELAY: dict[str, Any] = {
    "eventType": "DeliveryDelay",
    "mail": _MAIL,
    "deliveryDelay": {
        "timestamp": "2020-06-16T00:15:40.641Z",
        "delayType": "MailboxFull",
        "expirationTime": "2020-06-16T00:25:40.914Z",
        "delayedRecipients": [
            {
                "emailAddress": "recipient@example.com",
                "status": "4.2.2",
                "diagnosticCode": "smtp; 452 4.2.2 mailbox full",
            }
        ],
    },
}

REJECT: dict[str, Any] = {"eventType": "Reject", "mail": _MAIL, "reject": {"reason": "Bad content"}}

RENDERING_FAILURE: dict[str, Any] = {
    "eventType": "Rendering Failure",
    "mail": _MAIL,
    "failure": {
        "errorMessage": "Attribute 'attributeName' is not present in the rendering data.",
        "templateName": "MyTemplate",
    },
}

SEND: dict[str, Any] = {"eventType": "Send", "mail": _MAIL, "send": {}}

# Identity notifications (notificationType) carry the same sections.
NOTIFICATION_BOUNCE: dict[str, Any] = {
    "notificationType": "Bounce",
    "bounce": BOUNCE_PERMANENT["bounce"],
    "mail": {k: v for k, v in _MAIL.items() if k != "tags"},
}


def for_message(event: dict[str, Any], message_id: str, recipient: str) -> dict[str, Any]:
    """A copy of ``event`` about ``message_id`` sent to ``recipient``, new feedback id."""
    event = copy.deepcopy(event)
    event["mail"]["messageId"] = message_id
    event["mail"]["destination"] = [recipient]
    text = json.dumps(event).replace("recipient@example.com", recipient)
    event = json.loads(text)
    for section in event.values():
        if isinstance(section, dict) and "feedbackId" in section:
            section["feedbackId"] = f"{section['feedbackId']}-{message_id}"
    return event


def envelope(event: dict[str, Any], topic_arn: str) -> str:
    """The SNS envelope SNS puts around a published message (raw delivery off)."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
            "TopicArn": topic_arn,
            "Message": json.dumps(event),
            "Timestamp": "2017-08-05T00:41:03.000Z",
            "SignatureVersion": "2",
            "Signature": "EXAMPLE",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }
    )
