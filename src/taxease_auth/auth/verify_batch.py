"""Group commit for code checks (issue 16.5): the verifications that arrive together share one
transaction and one commit, and each is answered only after the commit that holds its effect.

A verification's cost was mostly its own transaction (BEGIN, COMMIT and, on PostgreSQL, their
round trips and the WAL flush). Here a task of its own takes every admitted submission queued
since its last commit (up to VERIFY_BATCH), checks them one after another in one transaction
and commits once; the requests wait for that commit. While the batches allowed at once are in
progress (one on SQLite, CODE_CHECK_BATCHES_IN_FLIGHT on PostgreSQL, each on its own
connection) the next one queues. What a verification guarantees does not change:

- single use: each check runs the same conditional updates in order, and a later check in the
  batch sees what an earlier one wrote (two submissions of one code: the first wins, the
  second finds no live code);
- every wrong attempt is counted and audited in the transaction whose commit answers it, next
  to the right codes of the same batch;
- no answer before its commit: a process that dies before the commit answered none of the
  batch, and the rolled-back batch spent none of its codes (tests/api/test_verify_batch.py);
- one failure does not fail the others: if any check raises (a registration that vanished,
  a database error), the batch is rolled back and each of its submissions is checked again
  in a transaction of its own, where only the failing one fails.

Submissions are checked in the order of their address (arrival order within one): two
batches (of one process or of two) then take PostgreSQL's row locks in one order and cannot
deadlock on each other; two checks of one address in two batches wait for each other's row
lock, so the second sees what the first committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from taxease_auth import metrics
from taxease_auth.auth.code_check import CodeChecker, CodeSubmission
from taxease_auth.auth.emails import mask_email
from taxease_auth.auth.login import Login
from taxease_auth.auth.registration import Registrar
from taxease_auth.auth.sessions import SessionTokens
from taxease_auth.errors import InvalidCode
from taxease_auth.logs import REQUEST_ID
from taxease_auth.store.models import Purpose
from taxease_auth.store.otps import CodeRow
from taxease_auth.store.sql import Database, Transaction

logger = logging.getLogger(__name__)

# Submissions checked in one transaction, at most. On SQLite a batch runs on the event loop
# without a pause (~150 µs a check): 32 keep that pause near 5 ms.
VERIFY_BATCH = 32


@dataclass(frozen=True, slots=True)
class _Checked:
    """A submission's effect, written in the batch's transaction."""

    outcome: CodeRow | InvalidCode
    tokens: SessionTokens | None
    # email_verification: whether the registration's password was activated.
    with_password: bool | None = None


@dataclass(slots=True)
class _Waiting:
    submitted: CodeSubmission
    request_id: str | None
    # Resolved after the commit: what was checked, or the error the request raises.
    answer: asyncio.Future[_Checked | BaseException]


class Verifications:
    def __init__(
        self,
        *,
        database: Database,
        checker: CodeChecker,
        registrar: Registrar,
        login: Login,
        mail_queued: Callable[[], None],
        batches_in_flight: int = 1,
    ) -> None:
        self._db = database
        self._checker = checker
        self._registrar = registrar
        self._login = login
        self._mail_queued = mail_queued
        self._queue: deque[_Waiting] = deque()
        self._batches_in_flight = batches_in_flight
        self._runners: set[asyncio.Task[None]] = set()

    async def verify(self, submitted: CodeSubmission) -> SessionTokens | None:
        """Check an admitted submission and apply its effect; return once that is committed.

        - email_verification: the account becomes verified with the registration's password;
        - login: the code is consumed and the session's tokens returned;
        - password_reset: the code is checked but not consumed (``confirm_password_reset``
          spends it); wrong tries still count.

        InvalidCode for every kind of failure, raised after the commit that counted it.
        """
        answer: asyncio.Future[_Checked | BaseException] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.append(_Waiting(submitted, REQUEST_ID.get(), answer))
        metrics.CODE_CHECKS_WAITING.inc()
        # Counted by done(), not by the set alone: a runner that has just found the queue
        # empty is done before its callback leaves the set, and this submission needs another.
        if sum(not runner.done() for runner in self._runners) < self._batches_in_flight:
            # A context of its own: the task outlives the request that happened to start it.
            runner = asyncio.create_task(self._run(), context=contextvars.Context())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        # A client that goes away cancels only its wait: its submission is checked (and a
        # wrong one counted) all the same.
        result = await answer
        if isinstance(result, BaseException):
            raise result
        if isinstance(result.outcome, InvalidCode):
            raise result.outcome
        return result.tokens

    async def drain(self) -> None:
        """Return once every queued submission is committed and answered (at shutdown)."""
        while self._runners:
            await asyncio.wait(set(self._runners))  # waiting cancels none of them

    async def _run(self) -> None:
        batch: list[_Waiting] = []
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(VERIFY_BATCH, len(self._queue)))]
                metrics.CODE_CHECKS_WAITING.dec(len(batch))
                await self._settle(batch)
                batch = []
                # Let the answered requests go out, and the requests that arrived meanwhile
                # join the next batch.
                await asyncio.sleep(0)
        except BaseException as error:  # cancelled at shutdown: no request waits forever
            for waiting in [*batch, *self._queue]:
                _answer(waiting, RuntimeError("code check stopped"))
            metrics.CODE_CHECKS_WAITING.dec(len(self._queue))
            self._queue.clear()
            if not isinstance(error, Exception):
                raise
            logger.exception("checking submitted codes failed")
        finally:
            REQUEST_ID.set(None)

    async def _settle(self, batch: list[_Waiting]) -> None:
        """Check ``batch`` in one transaction and answer each submission after its commit."""
        batch.sort(key=lambda waiting: waiting.submitted.email)
        try:
            async with self._db.transaction() as tx:
                checked = [await self._check(tx, waiting) for waiting in batch]
        except Exception as error:
            if len(batch) == 1:
                _answer(batch[0], error)
                return
            # One submission failed the whole transaction: check them one by one, so it
            # alone fails.
            for waiting in batch:
                await self._settle([waiting])
            return
        metrics.CODE_CHECK_COMMITS.inc()
        verified_address = False
        for waiting, result in zip(batch, checked, strict=True):
            REQUEST_ID.set(waiting.request_id)  # its lines carry the id of the request
            self._checker.counted(waiting.submitted, result.outcome)
            if isinstance(result.outcome, CodeRow):
                if waiting.submitted.purpose is Purpose.EMAIL_VERIFICATION:
                    verified_address = True
                    _log_verified(waiting.submitted.email, with_password=result.with_password)
                elif waiting.submitted.purpose is Purpose.LOGIN:
                    self._login.code_login_succeeded(waiting.submitted.email)
            _answer(waiting, result)
        if verified_address:
            self._mail_queued()  # a verification without a password mails a notice

    async def _check(self, tx: Transaction, waiting: _Waiting) -> _Checked:
        REQUEST_ID.set(waiting.request_id)
        submitted = waiting.submitted
        purpose = submitted.purpose
        outcome = await self._checker.check(
            tx, submitted, consume=purpose is not Purpose.PASSWORD_RESET
        )
        tokens = None
        with_password = None
        if isinstance(outcome, InvalidCode):
            pass  # committed with the batch (the attempt counted), raised after
        elif purpose is Purpose.EMAIL_VERIFICATION:
            with_password = await self._registrar.activate(
                tx, outcome, bound=submitted.registration_id is not None
            )
        elif purpose is Purpose.LOGIN:
            tokens = await self._login.start_with_code(
                tx, submitted.email, client_ip=submitted.client_ip, user_agent=submitted.user_agent
            )
        return _Checked(outcome, tokens, with_password)


def _log_verified(email: str, *, with_password: bool | None) -> None:
    """After the commit that verified ``email``: a line logged before it could tell of a
    verification that a failed commit then undid."""
    if with_password:
        logger.info("email verified for %s", mask_email(email))
    else:
        logger.info(
            "email verified for %s without a password: another registration claimed it",
            mask_email(email),
        )


def _answer(waiting: _Waiting, result: _Checked | BaseException) -> None:
    if not waiting.answer.done():  # not cancelled by a client that went away
        waiting.answer.set_result(result)
