"""`taxease-auth doctor`: the mail set-up checks the guide's troubleshooting section walks
through, each answered PASS, FAIL (with the fix) or UNKNOWN (the endpoint cannot tell).

For SES: region, credentials, sender identity verified, MAIL FROM domain, sandbox or production
access, sending enabled, quota used and left, the configured send rate, configuration set.
For SMTP: a session opened (TLS and AUTH as configured) and closed. Every SES call is read-only
and made once with short timeouts; whatever an endpoint cannot answer (moto has no
``GetAccount``, no ``GetAccountSendingEnabled``) is reported UNKNOWN, never a crash.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio
import boto3.session
import botocore.config
import botocore.exceptions
import botocore.parsers

from taxease_auth.config import EmailBackendName, Settings
from taxease_auth.mail.backends.base import PermanentSendError, SendError

# Answers that mean "these credentials are not valid" (as opposed to "not allowed").
CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
    }
)
PERMISSION_CODES = frozenset({"AccessDenied", "AccessDeniedException"})
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


class Status(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


def failed(checks: list[Check]) -> bool:
    return any(check.status is Status.FAIL for check in checks)


def render(checks: list[Check]) -> str:
    """One line per check, its fix indented below; a count at the end."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{check.status.value:<8} {check.name:<{width}}  {check.detail}")
        if check.fix and check.status is not Status.PASS:
            lines.append(f"{'':<8} {'':<{width}}  fix: {check.fix}")
    counts = {status: sum(c.status is status for c in checks) for status in Status}
    lines.append(", ".join(f"{counts[status]} {status.value}" for status in Status))
    return "\n".join(lines)


def run_checks(settings: Settings) -> list[Check]:
    """Check the configured mail backend; never raises for what an endpoint answers."""
    checks = [_sender_check(settings)]
    backend = settings.mail_backend
    if backend is EmailBackendName.SES:
        ses = SesChecks(settings)
        try:
            checks += ses.run()
        finally:
            ses.close()
    elif backend is EmailBackendName.SMTP:
        checks.append(_smtp_check(settings))
    else:
        checks.append(
            Check(
                "backend",
                Status.PASS,
                "EMAIL_BACKEND=console (development): mail is printed, nothing is sent",
                None,
            )
        )
        return checks
    # SES's feedback: events in, suppression, reputation (imported late: it loads the store).
    from taxease_auth.mail.feedback.doctor_checks import feedback_checks

    return checks + feedback_checks(settings)


def _sender_check(settings: Settings) -> Check:
    sender = settings.sender
    address = email.utils.parseaddr(sender or "")[1]
    if not sender or "@" not in address:
        return Check(
            "sender",
            Status.FAIL,
            f"AWS_SES_FROM_EMAIL is {'not set' if not sender else 'not an address'}",
            "set AWS_SES_FROM_EMAIL to a verified address, e.g. TaxEase <no-reply@example.com>",
        )
    return Check("sender", Status.PASS, f"mail is sent from {sender}")


def _smtp_check(settings: Settings) -> Check:
    from taxease_auth.mail.backends.smtp import SmtpBackend

    where = f"{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security})"

    async def probe() -> None:
        backend = SmtpBackend(settings, max_concurrency=1)
        try:
            await backend.check()
        finally:
            await backend.aclose()

    try:
        anyio.run(probe)
    except SendError as error:
        account_wide = isinstance(error, PermanentSendError) and error.account_wide
        return Check(
            "smtp",
            Status.FAIL,
            f"{where}: {error.reason}",
            "check SMTP_HOST, SMTP_PORT, SMTP_SECURITY, SMTP_USERNAME/SMTP_PASSWORD"
            + (" and SMTP_CA_FILE" if account_wide else " and the network path to the server"),
        )
    login = f", logged in as {settings.smtp_username}" if settings.smtp_username else ""
    return Check("smtp", Status.PASS, f"{where}: session opened{login}")


@dataclass(frozen=True, slots=True)
class Answer:
    """What an SES call gave: its data, or an error code with its message."""

    data: dict[str, Any] | None = None
    code: str | None = None
    message: str = ""
    unreachable: bool = False

    @property
    def why(self) -> str:
        text = " ".join(self.message.split())
        if text.lower().startswith("<!doctype") or text.lower().startswith("<html"):
            text = "not implemented by this endpoint"
        return f"{self.code}: {text[:160]}" if text else str(self.code)


def ask(call: Callable[..., Any], **params: Any) -> Answer:
    """Call one SES (or SQS) client method with ``params`` and never raise for what a check
    should report: an error answer, an unreachable endpoint, bad credentials or region, an
    answer botocore cannot parse all come back as an ``Answer`` with ``code`` set (and
    ``unreachable`` for the network). On success ``data`` is the response without its
    ``ResponseMetadata``. Shared by the SES checks here and the feedback checks
    (``mail/feedback/doctor_checks.py``)."""
    try:
        data = call(**params)
    except botocore.exceptions.ClientError as error:
        details = error.response.get("Error", {})
        return Answer(
            code=str(details.get("Code") or "Unknown"), message=str(details.get("Message") or "")
        )
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as error:
        return Answer(code=type(error).__name__, message=str(error), unreachable=True)
    except botocore.exceptions.BotoCoreError as error:  # credentials, region, validation
        return Answer(code=type(error).__name__, message=str(error))
    except botocore.parsers.ResponseParserError:
        # moto answers GetAccountSendingEnabled with something botocore cannot parse.
        return Answer(code="unparsable", message="the endpoint's answer could not be read")
    data.pop("ResponseMetadata", None)
    return Answer(data=data)


class SesChecks:
    """The SES checks, in the order an operator would walk through them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._region = settings.aws_region
        self._endpoint = settings.aws_endpoint_url
        config = botocore.config.Config(
            # One quick try each: the doctor reports, it does not insist.
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=3,
            read_timeout=5,
        )
        self._session: Any = None
        self._v2: Any = None
        self._v1: Any = None
        # A broken profile or config file fails here, before any call: report it, not crash.
        self._problem: str | None = None
        try:
            self._session = boto3.session.Session(
                region_name=self._region, **settings.aws_credentials
            )
            endpoint = self._endpoint or None
            self._v2 = self._session.client("sesv2", endpoint_url=endpoint, config=config)
            self._v1 = self._session.client("ses", endpoint_url=endpoint, config=config)
        except botocore.exceptions.BotoCoreError as error:
            self._problem = f"{type(error).__name__}: {error}"

    def run(self) -> list[Check]:
        checks = [self._region_check()]
        problem = self._problem
        if problem is None:
            try:
                if self._session.get_credentials() is None:
                    problem = "no AWS credentials found (environment, shared files, instance role)"
            except botocore.exceptions.BotoCoreError as error:
                problem = f"{type(error).__name__}: {error}"
        if problem is not None:
            checks.append(
                Check(
                    "credentials",
                    Status.FAIL,
                    problem,
                    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give the host an IAM "
                    "role with ses:SendEmail, ses:GetAccount, ses:GetSendQuota (and check "
                    "AWS_PROFILE and ~/.aws/config)",
                )
            )
            return checks + self._not_asked("no usable credentials")
        account = ask(self._v2.get_account)
        # Moto and other emulators lack GetAccount: the classic quota call stands in.
        quota = ask(self._v1.get_send_quota) if account.data is None else account
        checks.append(self._credentials_check(account, quota))
        if checks[-1].status is Status.FAIL:
            return checks + self._not_asked(checks[-1].detail)
        checks += self._identity_checks()
        checks.append(self._sandbox_check(account))
        checks.append(self._sending_check(account))
        checks += self._quota_checks(account, quota)
        checks.append(self._configuration_set_check())
        return checks

    def suppression_check(self, address: str) -> Check:
        """Whether ``address`` is on the account-level suppression list: SES then accepts mail
        to it (a message id and all) but never delivers (SECURITY-AND-SES.md §2.7)."""
        if self._v2 is None:
            return Check("suppression", Status.UNKNOWN, f"not checked: {self._problem}")
        answer = ask(self._v2.get_suppressed_destination, EmailAddress=address)
        if answer.data is not None:
            entry = answer.data.get("SuppressedDestination") or {}
            reason = entry.get("Reason", "unknown reason")
            since = entry.get("LastUpdateTime")
            return Check(
                "suppression",
                Status.FAIL,
                f"{address} is on the SES suppression list ({reason}"
                + (f", since {since:%Y-%m-%d %H:%M} UTC" if since else "")
                + "): SES accepts mail to it and never delivers",
                f"once the address works again: `aws sesv2 delete-suppressed-destination "
                f"--email-address {address}`",
            )
        if answer.code == "NotFoundException":
            return Check("suppression", Status.PASS, "not on the SES account suppression list")
        return Check("suppression", Status.UNKNOWN, f"the endpoint cannot tell ({answer.why})")

    def close(self) -> None:
        for client in (self._v2, self._v1):
            if client is not None:
                client.close()

    # --- each check --------------------------------------------------------------------------

    def _region_check(self) -> Check:
        if not _REGION.match(self._region):
            return Check(
                "region",
                Status.FAIL,
                f"AWS_REGION={self._region!r} is not a region name",
                "set AWS_REGION to the region of your SES identities, e.g. ca-central-1",
            )
        if self._endpoint:
            return Check(
                "region", Status.PASS, f"{self._region} at AWS_ENDPOINT_URL {self._endpoint}"
            )
        regions = self._session.get_available_regions("sesv2") if self._session else []
        if regions and self._region not in regions:
            return Check(
                "region",
                Status.FAIL,
                f"SES has no endpoint in {self._region}",
                "set AWS_REGION to a region where SES runs and your identities are verified",
            )
        return Check(
            "region",
            Status.PASS,
            f"{self._region} (identities, sandbox and quotas are per region)",
        )

    def _credentials_check(self, account: Answer, quota: Answer) -> Check:
        credentials = self._session.get_credentials()
        source = getattr(credentials, "method", None) or "unknown source"
        key = getattr(credentials, "access_key", "") or ""
        who = f"access key {key[:4]}…{key[-4:]} from {source}" if len(key) > 8 else source
        answers = [account, quota]
        if any(answer.data is not None for answer in answers):
            return Check("credentials", Status.PASS, f"accepted by SES ({who})")
        for answer in answers:
            if answer.code in CREDENTIAL_CODES:
                return Check(
                    "credentials",
                    Status.FAIL,
                    f"rejected by SES ({who}): {answer.why}",
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the role) and the "
                    "host's clock; SES SMTP credentials are not API credentials",
                )
            if answer.unreachable:
                return Check(
                    "credentials",
                    Status.FAIL,
                    f"cannot reach SES in {self._region}: {answer.why}",
                    "check the network path to SES"
                    + (", and AWS_ENDPOINT_URL" if self._endpoint else " and AWS_REGION"),
                )
        if any(answer.code in PERMISSION_CODES for answer in answers):
            return Check(
                "credentials",
                Status.PASS,
                f"accepted by SES ({who}), but not allowed to read the account: {quota.why}",
            )
        return Check(
            "credentials",
            Status.UNKNOWN,
            f"SES did not say ({account.why}; {quota.why})",
            "run `aws sesv2 get-account` with the same credentials",
        )

    def _identity_checks(self) -> list[Check]:
        address = email.utils.parseaddr(self._settings.sender or "")[1].lower()
        if "@" not in address:
            return [Check("sender identity", Status.UNKNOWN, "no sender address to look up")]
        domain = address.rpartition("@")[2]
        for identity in (address, domain):
            answer = ask(self._v2.get_email_identity, EmailIdentity=identity)
            if answer.data is not None:
                return self._judge_identity(identity, answer.data)
            if answer.code != "NotFoundException":
                return [Check("sender identity", Status.UNKNOWN, f"{identity}: {answer.why}")]
        return [
            Check(
                "sender identity",
                Status.FAIL,
                f"neither {address} nor {domain} is an SES identity in {self._region} "
                "(MessageRejected: Email address is not verified)",
                f"SES console ({self._region}) → Verified identities → Create identity, then "
                f"open the link SES mails to {address} (or publish the domain's DKIM records)",
            )
        ]

    def _judge_identity(self, identity: str, data: dict[str, Any]) -> list[Check]:
        for_sending = data.get("VerifiedForSendingStatus")
        status = str(data.get("VerificationStatus") or "unknown")
        kind = str(data.get("IdentityType") or "identity").lower().replace("_", " ")
        what = (
            f"{identity} ({kind}): VerifiedForSendingStatus={for_sending}, "
            f"VerificationStatus={status}"
        )
        if for_sending is True:
            checks = [Check("sender identity", Status.PASS, what)]
        elif status == "SUCCESS":
            checks = [
                Check(
                    "sender identity",
                    Status.UNKNOWN,
                    f"{what}: the two disagree (moto always reports VerifiedForSendingStatus "
                    "false; on AWS the identity cannot send yet)",
                    "on AWS, look at the identity in the SES console and run doctor again in a "
                    "few minutes",
                )
            ]
        else:
            fix = (
                f"open the verification link SES mailed to {identity} (the console can send it "
                "again)"
                if "@" in identity
                else f"publish the DKIM CNAME records SES lists for {identity}"
            )
            checks = [Check("sender identity", Status.FAIL, f"{what}: not verified", fix)]
        mail_from = data.get("MailFromAttributes") or {}
        mail_from_domain = mail_from.get("MailFromDomain")
        if mail_from_domain:
            state = str(mail_from.get("MailFromDomainStatus") or "unknown")
            checks.append(
                Check("MAIL FROM domain", Status.PASS, f"{mail_from_domain}: {state}")
                if state == "SUCCESS"
                else Check(
                    "MAIL FROM domain",
                    Status.FAIL,
                    f"{mail_from_domain}: {state} (MailFromDomainNotVerified)",
                    f"publish the MX and SPF records SES lists for {mail_from_domain}, or remove "
                    "the custom MAIL FROM domain",
                )
            )
        return checks

    def _sandbox_check(self, account: Answer) -> Check:
        if account.data is None:
            return Check(
                "production access",
                Status.UNKNOWN,
                f"the endpoint cannot tell (GetAccount: {account.why})",
                f"see the SES console's Account dashboard in {self._region}",
            )
        if account.data.get("ProductionAccessEnabled") is True:
            return Check("production access", Status.PASS, "granted: mail may go to any address")
        review = (account.data.get("Details") or {}).get("ReviewDetails") or {}
        pending = " (a request is under review)" if review.get("Status") == "PENDING" else ""
        return Check(
            "production access",
            Status.FAIL,
            "sandbox: mail only reaches verified addresses, at most 200 a day and 1 a second"
            + pending,
            "SES console → Account dashboard → Request production access, or `aws sesv2 "
            "put-account-details --production-access-enabled --mail-type TRANSACTIONAL "
            "--website-url URL --use-case-description TEXT`",
        )

    def _sending_check(self, account: Answer) -> Check:
        if account.data is not None:
            enabled = account.data.get("SendingEnabled")
            enforcement = str(account.data.get("EnforcementStatus") or "unknown")
            if enabled is False or enforcement == "SHUTDOWN":
                return Check(
                    "sending enabled",
                    Status.FAIL,
                    f"sending is paused (SendingEnabled={enabled}, enforcement {enforcement})",
                    "read the mail AWS sent to the account owner; once resolved: `aws sesv2 "
                    "put-account-sending-attributes --sending-enabled`",
                )
            note = (
                " (under review: keep bounces and complaints low)"
                if enforcement == "PROBATION"
                else ""
            )
            return Check("sending enabled", Status.PASS, f"yes, enforcement {enforcement}{note}")
        classic = ask(self._v1.get_account_sending_enabled)
        if classic.data is None:
            return Check(
                "sending enabled",
                Status.UNKNOWN,
                f"the endpoint cannot tell (GetAccount: {account.why}; "
                f"GetAccountSendingEnabled: {classic.why})",
                f"see the SES console's Account dashboard in {self._region}",
            )
        if classic.data.get("Enabled") is False:
            return Check(
                "sending enabled",
                Status.FAIL,
                "sending is paused for the account",
                "`aws ses update-account-sending-enabled --enabled` once the cause is fixed",
            )
        return Check("sending enabled", Status.PASS, "yes")

    def _quota_checks(self, account: Answer, quota: Answer) -> list[Check]:
        numbers = (account.data or {}).get("SendQuota") if account.data else quota.data
        if not numbers:
            return [
                Check(
                    "quota",
                    Status.UNKNOWN,
                    f"the endpoint cannot tell (GetAccount: {account.why}; "
                    f"GetSendQuota: {quota.why})",
                    "allow ses:GetAccount and ses:GetSendQuota to these credentials",
                )
            ]
        max_24h = float(numbers.get("Max24HourSend", 0))
        sent = float(numbers.get("SentLast24Hours", 0))
        rate = float(numbers.get("MaxSendRate", 0))
        if max_24h < 0:
            checks = [Check("quota", Status.PASS, f"unlimited; {sent:g} sent in the last 24 h")]
        elif sent >= max_24h:
            checks = [
                Check(
                    "quota",
                    Status.FAIL,
                    f"used up: {sent:g} of {max_24h:g} in the last 24 h (Throttling: Daily "
                    "message quota exceeded)",
                    "wait for the 24-hour window to move, or ask AWS for a higher quota "
                    "(Service Quotas console)",
                )
            ]
        else:
            checks = [
                Check(
                    "quota",
                    Status.PASS,
                    f"{sent:g} of {max_24h:g} used in the last 24 h, {max_24h - sent:g} left",
                )
            ]
        override = self._settings.ses_max_send_rate
        if override is not None and rate > 0 and override > rate:
            checks.append(
                Check(
                    "send rate",
                    Status.FAIL,
                    f"SES_MAX_SEND_RATE={override:g}/s is above SES's MaxSendRate {rate:g}/s: "
                    "SES will throttle",
                    f"unset SES_MAX_SEND_RATE or set it to at most {rate:g}",
                )
            )
        else:
            pace = f"{override:g}/s (SES_MAX_SEND_RATE)" if override is not None else f"{rate:g}/s"
            checks.append(
                Check("send rate", Status.PASS, f"MaxSendRate {rate:g}/s; worker paces at {pace}")
            )
        return checks

    def _configuration_set_check(self) -> Check:
        name = self._settings.aws_ses_configuration_set
        if not name:
            return Check(
                "configuration set",
                Status.PASS,
                "none set (optional: one with an event destination publishes bounces and "
                "complaints)",
            )
        answer = ask(self._v2.get_configuration_set, ConfigurationSetName=name)
        if answer.code == "NotFoundException":
            return Check(
                "configuration set",
                Status.FAIL,
                f"{name} does not exist in {self._region} (every send fails)",
                f"`aws sesv2 create-configuration-set --configuration-set-name {name}`, or unset "
                "AWS_SES_CONFIGURATION_SET",
            )
        if answer.data is None:
            return Check("configuration set", Status.UNKNOWN, f"{name}: {answer.why}")
        sending = (answer.data.get("SendingOptions") or {}).get("SendingEnabled")
        if sending is False:
            # moto reports every configuration set as paused: only AWS's own answer is final.
            status = Status.UNKNOWN if self._endpoint else Status.FAIL
            return Check(
                "configuration set",
                status,
                f"{name} exists but reports SendingEnabled=false"
                + (" (moto always does)" if self._endpoint else ""),
                f"`aws sesv2 put-configuration-set-sending-options --configuration-set-name "
                f"{name} --sending-enabled`",
            )
        return Check("configuration set", Status.PASS, f"{name} exists")

    def _not_asked(self, reason: str) -> list[Check]:
        return [
            Check(name, Status.UNKNOWN, f"not checked: {reason}")
            for name in ("sender identity", "production access", "sending enabled", "quota")
        ]


def connection_budget_check(settings: Settings) -> Check:
    """PostgreSQL's connection budget (store/budget.py): what each process of this service may
    open against what the server has left. FAIL when one process alone does not fit."""
    from sqlalchemy.exc import DBAPIError

    from taxease_auth.store import budget
    from taxease_auth.store.db import make_engine

    async def read() -> tuple[bool | None, str]:
        engine = make_engine(settings)
        try:
            return await budget.describe(engine, settings)
        finally:
            await engine.dispose()

    name = "database connections"
    try:
        fits, detail = anyio.run(read)
    except (OSError, DBAPIError) as error:
        return Check(name, Status.UNKNOWN, f"could not ask the database: {type(error).__name__}")
    if fits is None or fits:
        return Check(name, Status.PASS, detail)
    return Check(
        name,
        Status.FAIL,
        detail,
        f"lower {budget.SETTINGS_NAMES}, raise max_connections, or use PgBouncer "
        "(docs/deploy.md, PostgreSQL connections)",
    )
