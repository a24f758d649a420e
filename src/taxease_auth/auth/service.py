"""AuthService: the account flows of DESIGN.md §4, with no HTTP and no SQL text.

Every email given to a method here is canonical already (``auth.emails.canonical_email``);
the API's schemas make it so, and ``client_ip`` is the client address after TRUSTED_PROXIES.
Methods raise the precise domain error (``errors.py``) and leave to ``api/errors.py`` what the
client may learn: an unknown email and a wrong password look the same from outside, as do
wrong, expired, used and dead codes. Rate budgets are counted on what was submitted, whether
or not an account exists (``auth/limits.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from taxease_auth.auth.audit_trail import AuditTrail
from taxease_auth.auth.code_check import CodeChecker, CodeSubmission
from taxease_auth.auth.code_mail import CodeMail, code_issued
from taxease_auth.auth.deferred import AfterAnswer
from taxease_auth.auth.emails import email_fingerprint, mask_email
from taxease_auth.auth.limits import RateLimits
from taxease_auth.auth.login import Login, LoginChallenge
from taxease_auth.auth.passwords import PasswordHasher, check_password_policy
from taxease_auth.auth.registration import (
    MAX_REGISTRATIONS_IN_PROGRESS,
    AcceptedRegistration,
    Registrar,
    Registration,
    new_registration_id,
)
from taxease_auth.auth.sessions import EndReason, Sessions, SessionTokens
from taxease_auth.auth.verify_batch import Verifications
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidCode
from taxease_auth.logs import REQUEST_ID
from taxease_auth.mail.render import MailRenderer
from taxease_auth.store import issuing, otps, users
from taxease_auth.store.issuing import NewCode
from taxease_auth.store.models import MailKind, Purpose
from taxease_auth.store.sql import Database, Transaction
from taxease_auth.store.users import UserRow

# CodeSubmission (auth/code_check.py) and LoginChallenge (auth/login.py) are part of the
# service's API: its callers import them from here.
__all__ = ["AuthService", "CodeSubmission", "LoginChallenge"]

logger = logging.getLogger(__name__)

# A login challenge accepts resends for this many code lifetimes after the password was checked.
CHALLENGE_LIFETIMES = 3
# Requested codes are issued after the 202 (queue_requested_code). Past this many issues
# queued or in progress, new requests wait for their answer (wait_for_issuing_capacity)
# instead of queueing more: unbounded, a flood of requests piled up issues that waited for the
# database longer than its pool timeout and were dropped unissued after their 202, while
# memory grew (`make bench`, request-otp).
MAX_ISSUES_IN_PROGRESS = 64
# Requested codes issued in one transaction, at most. On SQLite a batch runs on the event loop
# without a pause (~60 µs a code): 16 keep that pause near a millisecond.
ISSUE_BATCH = 16


@dataclass(frozen=True, slots=True)
class _CodeRequest:
    """A code request answered with 202, waiting to be issued."""

    email: str
    purpose: Purpose
    client_ip: str
    challenge_id: str | None
    request_id: str | None
    registration_id: str | None = None
    locale: str | None = None  # the request's explicit language, for this mail only


def _greeted_name(user: UserRow) -> str | None:
    """The name a mail to ``user`` greets: none until the address is verified, since until
    then the name is a registrant's claim, not the mailbox owner's (Review 17.5)."""
    return user.first_name if user.email_verified else None


class AuthService:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        clock: Clock,
        hasher: PasswordHasher,
        sessions: Sessions,
        renderer: MailRenderer,
        limits: RateLimits,
        mail_queued: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._db = database
        self._clock = clock
        self._hasher = hasher
        self._sessions = sessions
        self._renderer = renderer
        self._limits = limits
        self._mail_queued = mail_queued
        self._code_lifetime = timedelta(minutes=settings.otp_expiry_minutes)
        self._issue_queue: deque[_CodeRequest] = deque()
        self._issuing = 0
        self._issuer: asyncio.Task[None] | None = None
        # Requests waiting for capacity, woken one per issued code (an Event would wake them
        # all, each to find the queue still full).
        self._waiting_for_capacity: deque[asyncio.Future[None]] = deque()
        self._code_mail = CodeMail(settings, renderer, self._fingerprint)
        self._registrar = Registrar(
            settings=settings,
            database=database,
            clock=clock,
            code_mail=self._code_mail,
            mail_queued=mail_queued,
        )
        self._registrations = AfterAnswer("registration", capacity=MAX_REGISTRATIONS_IN_PROGRESS)
        self._audit_trail = AuditTrail(clock, self._fingerprint)
        self._checker = CodeChecker(settings, clock, self._audit_trail)
        self._login = Login(
            settings=settings,
            database=database,
            clock=clock,
            hasher=hasher,
            sessions=sessions,
            limits=limits,
            code_mail=self._code_mail,
            audit=self._audit_trail,
            fingerprint=self._fingerprint,
            mail_queued=mail_queued,
        )
        self._verifications = Verifications(
            database=database,
            checker=self._checker,
            registrar=self._registrar,
            login=self._login,
            mail_queued=mail_queued,
            batches_in_flight=1 if settings.is_sqlite else settings.code_check_batches_in_flight,
        )

    # --- registration ------------------------------------------------------------------------

    async def register(self, registration: Registration, *, client_ip: str) -> str:
        """Accept a registration and return its id; the caller answers the same 201 (with a
        fresh id) whatever the address's state.

        Before the answer, the same work for every address: the password policy, the budgets
        and the hash. What depends on the address (a new account, a new code, or a notice to
        a verified owner: ``auth/registration.py``) runs after the answer, so its timing does
        not tell a verified address from a new one.
        """
        check_password_policy(
            registration.password,
            self._settings,
            email=registration.email,
            names=(registration.first_name, registration.last_name),
        )
        await self._limits.spend(self._limits.register_per_ip, client_ip)
        await self.admit_code_request(
            registration.email, Purpose.EMAIL_VERIFICATION, client_ip=client_ip
        )
        password_hash = await self._hasher.hash(registration.password)
        accepted = AcceptedRegistration(
            email=registration.email,
            password_hash=password_hash,
            first_name=registration.first_name,
            last_name=registration.last_name,
            client_ip=client_ip,
            registration_id=new_registration_id(),
            locale=registration.locale,
        )
        if self._settings.skips_email_verification or self._settings.active_developer_otp:
            # Development mode's bypasses only (both are off in production): a script may
            # log in, or type DEVELOPER_OTP, the instant it registered; on a laptop the
            # timing tells nothing worth hiding.
            await self._registrar.apply(accepted)
            return accepted.registration_id
        await self._registrations.wait_for_room()
        self._registrations.submit(lambda: self._registrar.apply(accepted))
        return accepted.registration_id

    # --- codes -------------------------------------------------------------------------------

    async def admit_code_request(self, email: str, purpose: Purpose, *, client_ip: str) -> None:
        """Spend the issuing budgets (cooldown and cap per address and purpose, cap per client)
        or raise RateLimited. Counted whether or not anything will be sent."""
        key = self._fingerprint(email)
        await self._limits.spend(self._limits.code_cooldown, key, purpose)
        await self._limits.spend(self._limits.code_issue_per_email, key, purpose)
        await self._limits.spend(self._limits.code_issue_per_ip, client_ip)

    async def wait_for_issuing_capacity(self) -> None:
        """Return once fewer than MAX_ISSUES_IN_PROGRESS requested codes wait to be issued.

        Called before answering a code request: under a flood the answers slow down to the
        rate codes can be issued, instead of promising more than will be sent. The wait
        depends on the load only, never on the address asked for.
        """
        if (
            self._waiting_for_capacity
            or len(self._issue_queue) + self._issuing >= MAX_ISSUES_IN_PROGRESS
        ):
            # First come, first served: a newcomer never overtakes a waiting request, and a
            # woken request goes ahead without checking again (re-queued at the back, some
            # waited seconds while newcomers took every slot: `make bench`, request-otp).
            waiter = asyncio.get_running_loop().create_future()
            self._waiting_for_capacity.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:  # the client went away
                if waiter in self._waiting_for_capacity:
                    self._waiting_for_capacity.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake_waiting_requests(1)  # it had been given room: pass it on
                raise

    def queue_requested_code(
        self,
        email: str,
        purpose: Purpose,
        *,
        client_ip: str,
        challenge_id: str | None = None,
        registration_id: str | None = None,
        locale: str | None = None,
    ) -> None:
        """Send a code where one is due, after the answer; otherwise do nothing.

        Issued by a task of its own, so the answer's timing does not depend on the account.
        Requests queued meanwhile are issued together, up to ISSUE_BATCH in one transaction
        (each issue writes three rows; their commit is most of its cost). A login code is only
        re-sent for a live challenge (opened by a correct password): no one gets tokens from an
        email address alone. A verification code is re-sent for ``registration_id``'s
        registration, or without one for the address's newest registration, and retires only
        that registration's earlier code. The mail is in ``locale`` when given, else in the
        account's language (DESIGN.md §12).
        """
        if purpose is not Purpose.EMAIL_VERIFICATION:
            registration_id = None
        self._issue_queue.append(
            _CodeRequest(
                email, purpose, client_ip, challenge_id, REQUEST_ID.get(), registration_id, locale
            )
        )
        if self._issuer is None or self._issuer.done():
            # A context of its own: the task outlives the request that happened to start it.
            self._issuer = asyncio.create_task(self._issue_queued(), context=contextvars.Context())

    async def drain_requested_codes(self) -> None:
        """Issue what is queued, registrations included (at shutdown: every answered request
        gets its code), and commit the code checks in progress."""
        await self._registrations.drain()
        await self._verifications.drain()
        while self._issuer is not None and not self._issuer.done():
            await asyncio.shield(self._issuer)

    async def _issue_queued(self) -> None:
        while self._issue_queue:
            # A resend answered after a registration is issued after it: the registration's
            # account and code must exist first (both are applied after their answers).
            await self._registrations.drain()
            batch = [
                self._issue_queue.popleft() for _ in range(min(ISSUE_BATCH, len(self._issue_queue)))
            ]
            self._issuing = len(batch)
            try:
                await self._issue_batch(batch)
            finally:
                self._issuing = 0
                REQUEST_ID.set(None)
                self._wake_waiting_requests(len(batch))
            self._mail_queued()
            await asyncio.sleep(0)  # let the requests that just got room answer first

    async def _issue_batch(self, batch: list[_CodeRequest]) -> None:
        try:
            async with self._db.transaction() as tx:
                issued = await self._issue_requested_codes(tx, batch)
        except Exception:
            if len(batch) == 1:
                REQUEST_ID.set(batch[0].request_id)
                logger.exception("issuing a requested code failed")
                return
            # One request failed the whole transaction: issue them one by one, so it loses
            # only its own code.
            for request in batch:
                await self._issue_batch([request])
            return
        for request, code in issued:
            REQUEST_ID.set(request.request_id)  # its line carries the id of the request
            self._code_issued(code)

    async def _issue_requested_codes(
        self, tx: Transaction, batch: list[_CodeRequest]
    ) -> list[tuple[_CodeRequest, NewCode]]:
        """Decide which requests get a code, and issue those together (store/issuing.py).

        Of several requests for one address and purpose in the batch, the newest is issued:
        each new code retires the previous one, whose mail would carry a dead code.
        """
        now = self._clock.now()
        newest = {
            (request.email, request.purpose, request.registration_id): request for request in batch
        }
        # In address order, as code checks are batched (auth/verify_batch.py): two batches
        # then take PostgreSQL's row locks in one order and cannot deadlock on each other.
        requests = sorted(newest.values(), key=lambda request: request.email)
        accounts = await users.get_many_by_email(tx, [request.email for request in requests])
        issued: list[tuple[_CodeRequest, NewCode]] = []
        for request in requests:
            REQUEST_ID.set(request.request_id)
            code = await self._requested_code(tx, request, accounts.get(request.email), now)
            if code is not None:
                issued.append((request, code))
        # With and without a registration id, two requests can name one registration: its
        # newest request is issued.
        issued = list({code.key: (request, code) for request, code in issued}.values())
        await issuing.issue(tx, [code for _, code in issued], now=now)
        return issued

    def _wake_waiting_requests(self, count: int) -> None:
        while count and self._waiting_for_capacity:
            waiter = self._waiting_for_capacity.popleft()
            if not waiter.done():  # not cancelled meanwhile
                waiter.set_result(None)
                count -= 1

    async def _requested_code(
        self, tx: Transaction, request: _CodeRequest, user: UserRow | None, now: datetime
    ) -> NewCode | None:
        """The code a request gets, or None (unknown address, already verified, no live login
        challenge)."""
        email, purpose, challenge_id = request.email, request.purpose, request.challenge_id
        if user is None:
            logger.info("code requested for unknown %s: nothing sent", mask_email(email))
            return None
        pending = None
        registration_id = None
        if purpose is Purpose.EMAIL_VERIFICATION:
            if user.email_verified:
                return None
            registration = await otps.pending_registration(
                tx, email=email, registration_id=request.registration_id
            )
            if registration is None:
                if request.registration_id is not None or user.password_hash is None:
                    return None
                # Registered before codes carried their registration: the row's mirror.
                registration = otps.PendingRegistration(
                    None, user.password_hash, user.first_name, user.last_name
                )
            registration_id = registration.registration_id
            pending = (registration.password_hash, registration.first_name, registration.last_name)
        elif purpose is Purpose.LOGIN and (
            challenge_id is None
            or not await otps.challenge_is_live(
                tx,
                email=email,
                challenge_id=challenge_id,
                started_after=now - self._code_lifetime * CHALLENGE_LIFETIMES,
            )
        ):
            return None
        return self._code_mail.new_code(
            email=email,
            purpose=purpose,
            first_name=_greeted_name(user),
            client_ip=request.client_ip,
            now=now,
            pending=pending,
            challenge_id=challenge_id if purpose is Purpose.LOGIN else None,
            registration_id=registration_id,
            locale=request.locale or user.locale,
        )

    async def verify_code(self, submitted: CodeSubmission) -> SessionTokens | None:
        """Check a code and apply its effect (``auth/verify_batch.py``: checks that arrive
        together share one commit, each answered after it); InvalidCode for every kind of
        failure. A login code's answer carries the session's tokens."""
        await self._admit_code_attempt(submitted)
        if submitted.purpose is Purpose.LOGIN and submitted.challenge_id is None:
            raise InvalidCode("login code without challenge")
        return await self._verifications.verify(submitted)

    async def confirm_password_reset(
        self, email: str, code: str, new_password: str, *, client_ip: str
    ) -> None:
        """Spend a reset code and set the new password. Ends every earlier token and every
        other pending code, mails the owner a notice, does not log in (the client logs in with
        the new password). Works while login is throttled: the budgets are separate."""
        submitted = CodeSubmission(email, code, Purpose.PASSWORD_RESET, client_ip)
        await self._admit_code_attempt(submitted)
        now = self._clock.now()
        # The same checks for every address before the code is known to be right: checking the
        # holder's names here would tell a guesser that the account exists, and its names.
        check_password_policy(new_password, self._settings, field="new_password", email=email)
        # Hash first: a wrong code then costs the same time as a right one.
        password_hash = await self._hasher.hash(new_password)
        async with self._db.transaction() as tx:
            outcome = await self._checker.check(tx, submitted, consume=True)
            user = None if isinstance(outcome, InvalidCode) else await users.get_by_email(tx, email)
            if user is not None:
                # Raising here rolls the transaction back: the code stays usable.
                check_password_policy(
                    new_password,
                    self._settings,
                    field="new_password",
                    email=email,
                    names=(user.first_name, user.last_name),
                )
                await users.replace_password(tx, user.id, password_hash=password_hash, now=now)
                # Whoever knew the old password may hold a session: every one ends.
                await self._sessions.end_every_session(
                    tx, user.id, EndReason.PASSWORD_RESET, now=now
                )
                # Every other pending code dies with the old password, a squatter's pending
                # registration code included (it would otherwise set *its* password back).
                await otps.retire_live(tx, email=email, purpose=None, now=now)
                await self._queue_notice(tx, user, MailKind.PASSWORD_CHANGED, now)
                await self._audit_trail.record(tx, "password_reset", email, client_ip, "success")
        self._checker.counted(submitted, outcome)
        if isinstance(outcome, InvalidCode):
            raise outcome
        if user is None:
            raise InvalidCode("account vanished")
        logger.info("password reset for %s", mask_email(email))
        self._mail_queued()

    # --- login and tokens --------------------------------------------------------------------

    async def login(
        self, email: str, password: str, *, client_ip: str, user_agent: str | None = None
    ) -> SessionTokens | LoginChallenge:
        """Check the password and start a session or a login challenge (``auth/login.py``)."""
        return await self._login.login(email, password, client_ip=client_ip, user_agent=user_agent)

    async def current_user(self, token: str) -> UserRow:
        """The user a bearer token belongs to, or InvalidToken (also once its session ended)."""
        return (await self._sessions.authenticate(token)).user

    # --- internals ---------------------------------------------------------------------------

    def _fingerprint(self, email: str) -> str:
        return email_fingerprint(self._settings.signing_key, email)

    async def _admit_code_attempt(self, submitted: CodeSubmission) -> None:
        """Spend the client's budget and take one slot of the address's code budget, or raise
        RateLimited before any code is looked at.

        The slot is taken before the check, in one atomic step, and kept whatever the outcome:
        checked first and charged after a failure, a burst of 40 simultaneous wrong guesses
        had 33 checked against a budget of 10. Giving the slot back on success would need a
        way to remove a hit that the ``limits`` storages (Redis among them) do not offer; a
        right code costs its owner one slot of a budget their own flows barely touch.
        """
        await self._limits.spend(self._limits.verify_per_ip, submitted.client_ip)
        await self._limits.spend(
            self._limits.verify_failures_per_email, self._fingerprint(submitted.email)
        )

    @staticmethod
    def _code_issued(code: NewCode) -> None:
        code_issued(code)

    async def _queue_notice(
        self, tx: Transaction, user: UserRow, kind: MailKind, now: datetime
    ) -> None:
        await self._code_mail.queue_notice(
            tx,
            recipient=user.email,
            kind=kind,
            first_name=_greeted_name(user),
            now=now,
            locale=user.locale,
        )
