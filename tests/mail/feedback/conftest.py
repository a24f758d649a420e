"""SES feedback's real parts: an SNS topic in moto's server feeding two SQS queues, one by raw
message delivery and one with SNS envelopes (SECURITY-AND-SES.md §2.10: moto's own identity
notifications are never used, they break a raw queue)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3.session
import pytest

from tests.conftest import REGION, SesInbox


def aws_client(service: str, endpoint: str) -> Any:
    return boto3.session.Session().client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@dataclass
class FeedbackQueues:
    endpoint: str
    topic_arn: str
    raw_queue: str
    envelope_queue: str
    sns: Any
    sqs: Any

    def queue(self, form: str) -> str:
        return self.raw_queue if form == "raw" else self.envelope_queue

    def publish(self, event: dict[str, Any] | str) -> None:
        message = event if isinstance(event, str) else json.dumps(event)
        self.sns.publish(TopicArn=self.topic_arn, Message=message)

    def send_body(self, queue_url: str, body: str) -> None:
        """Put a body straight into a queue (what no topic would publish)."""
        self.sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    def receive(self, queue_url: str) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def left(self, queue_url: str) -> int:
        """Messages still in the queue, visible or not (received, not deleted)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


@pytest.fixture
def feedback_queues(ses: SesInbox) -> Iterator[FeedbackQueues]:
    """A fresh topic and two queues (names unique per test: an abandoned long poll of an
    earlier test never reads this test's messages)."""
    sns = aws_client("sns", ses.endpoint)
    sqs = aws_client("sqs", ses.endpoint)
    suffix = uuid.uuid4().hex[:8]
    topic_arn = sns.create_topic(Name=f"ses-feedback-{suffix}")["TopicArn"]
    queues = {}
    for form in ("raw", "envelope"):
        url = sqs.create_queue(
            QueueName=f"ses-feedback-{form}-{suffix}",
            # Short, so a message left unread comes back within a test.
            Attributes={"VisibilityTimeout": "1"},
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true" if form == "raw" else "false"},
        )
        queues[form] = url
    yield FeedbackQueues(ses.endpoint, topic_arn, queues["raw"], queues["envelope"], sns, sqs)
    sns.close()
    sqs.close()
