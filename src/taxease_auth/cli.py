"""The `taxease-auth` command line: serve, worker, db, doctor, send-test, preview-mail,
outbox, purge, why, suppression."""

from __future__ import annotations

import asyncio
import signal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn

from taxease_auth.auth.guessing import refuse_likely_guessing
from taxease_auth.clock import SystemClock
from taxease_auth.config import ConfigError, Settings, load_settings
from taxease_auth.logs import configure_logging
from taxease_auth.store.models import MailKind, OutboxStatus

if TYPE_CHECKING:
    from taxease_auth.metrics_listener import MetricsListener
    from taxease_auth.operations import Outcome

app = typer.Typer(
    help="TaxEase Auth: accounts and email verification by one-time codes mailed through AWS SES.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    """Settings from the environment and .env, or exit 2 with the variable to fix."""
    try:
        settings = load_settings()
        refuse_likely_guessing(settings)
    except ConfigError as error:
        typer.echo(f"taxease-auth: {error}", err=True)
        raise typer.Exit(code=2) from None
    return settings


class EventLoop(StrEnum):
    # uvloop and httptools are chosen by name, not left to uvicorn's "auto" (which silently
    # falls back to asyncio and h11 when they are missing): `make bench` measured them faster.
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


class HttpParser(StrEnum):
    HTTPTOOLS = "httptools"
    H11 = "h11"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8001,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    loop: Annotated[EventLoop, typer.Option(help="Event loop implementation.")] = EventLoop.UVLOOP,
    http: Annotated[HttpParser, typer.Option(help="HTTP/1.1 parser.")] = HttpParser.HTTPTOOLS,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Also serve /metrics on this port, without METRICS_TOKEN (for a scraper on a "
            "private network); with --workers N, the sum over the processes.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address of the --metrics-port listener (keep it private).")
    ] = "127.0.0.1",
) -> None:
    """Serve the HTTP API (uvicorn). With EMBEDDED_WORKER (default) each process also delivers
    queued mail. Run `taxease-auth db upgrade` first."""
    settings = _settings()
    if settings.is_sqlite and workers > 1 and settings.embedded_worker:
        typer.echo(
            "taxease-auth: SQLite allows one delivery worker: use --workers 1, or "
            "EMBEDDED_WORKER=false with one `taxease-auth worker`, or PostgreSQL",
            err=True,
        )
        raise typer.Exit(code=2)
    if not settings.development_mode and workers > 1 and _in_process_budgets(settings):
        # Each process would keep budgets of its own: every per-address limit multiplied by
        # the process count, while the start-up guessing bound assumes one.
        typer.echo(
            "taxease-auth: RATE_LIMIT_STORAGE_URL=memory:// keeps rate budgets per process; "
            "with --workers > 1 in production set it to redis://... (or use --workers 1)",
            err=True,
        )
        raise typer.Exit(code=2)
    if metrics_port is not None and metrics_port == port:
        typer.echo("taxease-auth: --metrics-port must differ from --port", err=True)
        raise typer.Exit(code=2)
    configure_logging(settings)
    if workers > 1 and not settings.is_sqlite:
        _check_connection_budget(settings, processes=workers)
    _multiprocess_metrics(workers)
    listener = _metrics_listener(metrics_host, metrics_port)
    try:
        _run_server(host, port, workers, loop, http)
    finally:
        if listener is not None:
            listener.close()


def _metrics_listener(host: str, port: int | None) -> MetricsListener | None:
    """The --metrics-port listener, started in this process (uvicorn's supervisor when there
    are several workers: see metrics_listener.py), or exit 2 naming the option."""
    if port is None:
        return None
    from taxease_auth import metrics_listener

    try:
        return metrics_listener.start(host, port)
    except OSError as error:
        typer.echo(
            f"taxease-auth: --metrics-host {host} --metrics-port {port}: {error.strerror or error}",
            err=True,
        )
        raise typer.Exit(code=2) from None


def _run_server(host: str, port: int, workers: int, loop: EventLoop, http: HttpParser) -> None:
    uvicorn.run(
        "taxease_auth.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop=loop.value,
        http=http.value,
        ws="none",  # no route is a WebSocket: no implementation is imported
        log_config=None,
        # Ours (api/observability.py, ACCESS_LOG) carries the request id and never logs the
        # query string; uvicorn's would.
        access_log=False,
        proxy_headers=False,  # client addresses are taken from TRUSTED_PROXIES, not uvicorn
        server_header=False,
    )


def _check_connection_budget(settings: Settings, *, processes: int) -> None:
    """Warn before `serve --workers N` starts when N processes would not fit on PostgreSQL:
    each one checks itself at start-up, but cannot count siblings not connected yet."""
    from taxease_auth.store.budget import warn_if_over_budget
    from taxease_auth.store.db import make_engine

    async def check() -> None:
        engine = make_engine(settings)
        try:
            await warn_if_over_budget(engine, settings, processes=processes)
        finally:
            await engine.dispose()

    asyncio.run(check())


def _in_process_budgets(settings: Settings) -> bool:
    return settings.rate_limit_storage_url.startswith(("memory://", "async+memory://"))


def _multiprocess_metrics(workers: int) -> None:
    """Let /metrics add up every server process: prometheus_client's multiprocess mode.

    PROMETHEUS_MULTIPROC_DIR must be set before the processes import the metrics. When the
    operator set it (a directory shared with a separate `taxease-auth worker`, so its delivery
    metrics show too) it is used as it is. Otherwise, with more than one process, a fresh
    temporary directory is made here, inherited by the processes uvicorn spawns, and removed
    when `serve` exits.
    """
    import atexit
    import logging
    import os
    import shutil
    import tempfile

    from taxease_auth.metrics import MULTIPROC_DIR_VARIABLE

    logger = logging.getLogger(__name__)
    shared = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if shared:
        logger.info(
            "metrics of every process are collected in %s (%s)", shared, MULTIPROC_DIR_VARIABLE
        )
        return
    if workers == 1:
        return
    directory = tempfile.mkdtemp(prefix="taxease-auth-metrics-")
    os.environ[MULTIPROC_DIR_VARIABLE] = directory
    # uvicorn's supervisor returns after stopping its processes, so this runs on SIGTERM too.
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    logger.info("metrics of the %d server processes are collected in %s", workers, directory)


@app.command()
def worker() -> None:
    """Deliver queued mail without serving HTTP (to scale delivery out, or with
    EMBEDDED_WORKER=false). Stops cleanly on SIGINT/SIGTERM after in-flight sends."""
    from taxease_auth.store.outbox import OutboxLocked

    settings = _settings()
    configure_logging(settings)
    try:
        asyncio.run(_run_worker(settings))
    except OutboxLocked as error:
        typer.echo(f"taxease-auth: {error}", err=True)
        raise typer.Exit(code=2) from None


async def _run_worker(settings: Settings) -> None:
    from taxease_auth import metrics
    from taxease_auth.clock import SystemClock
    from taxease_auth.heap import freeze_startup_objects
    from taxease_auth.mail.backends import build_backend
    from taxease_auth.mail.worker import build_worker
    from taxease_auth.store.budget import warn_if_over_budget
    from taxease_auth.store.db import make_engine, make_sessionmaker

    engine = make_engine(settings)
    await warn_if_over_budget(engine, settings)  # PostgreSQL: would this process fit?
    backend = build_backend(settings)
    try:
        # On SQLite: OutboxLocked when another worker (or a server's embedded one) runs.
        delivery = build_worker(
            settings,
            sessions=make_sessionmaker(engine),
            backend=backend,
            clock=SystemClock(),
            standby=False,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: asyncio.ensure_future(delivery.stop()))
        freeze_startup_objects()  # no full collection stalls the pace (taxease_auth/heap.py)
        await delivery.run()
    finally:
        await backend.aclose()
        await engine.dispose()
        # With a PROMETHEUS_MULTIPROC_DIR shared with `serve`: its gauges end with it.
        metrics.mark_process_dead()


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the latest). Safe to run repeatedly."""
    from taxease_auth.store import migrate

    settings = _settings()
    migrate.upgrade(settings, revision)
    typer.echo(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; 'base' empties the schema.")],
) -> None:
    """Revert migrations down to REVISION."""
    from taxease_auth.store import migrate

    migrate.downgrade(_settings(), revision)
    typer.echo(f"database at {revision}")


# --- operating it: doctor, send-test, outbox, purge, why --------------------------------------
# The work is done in taxease_auth.operations (and the modules it calls); these functions parse
# the arguments, print the outcome and set the exit status.

outbox_app = typer.Typer(help="The mail outbox: list, stats, retry.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


def _finish(outcome: Outcome) -> None:
    typer.echo(outcome.text)
    if outcome.exit_code:
        raise typer.Exit(code=outcome.exit_code)


def _canonical(email: str) -> str:
    """The canonical form of EMAIL (as stored), or exit 2 saying why it is not usable."""
    from taxease_auth.auth.emails import InvalidEmail, canonical_email

    try:
        return canonical_email(email)
    except InvalidEmail as error:
        typer.echo(f"taxease-auth: {email!r} is not a usable email address: {error}", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def doctor() -> None:
    """Check the mail set-up, each item PASS, FAIL (with the fix) or UNKNOWN.

    For SES: region, credentials, sender identity, sandbox or production access, sending
    enabled, quota and send rate, configuration set. For SMTP: a session opened with TLS and
    AUTH as configured. On PostgreSQL, the connection budget: what each process may open
    against what the server has left. Exits 1 on any FAIL.
    """
    from taxease_auth.mail import doctor as mail_doctor

    settings = _settings()
    checks = [*mail_doctor.run_checks(settings), mail_doctor.connection_budget_check(settings)]
    typer.echo(mail_doctor.render(checks))
    if mail_doctor.failed(checks):
        raise typer.Exit(code=1)


@app.command("send-test")
def send_test(
    email: Annotated[str, typer.Argument(help="Where to send the test mail.")],
) -> None:
    """Send a test mail to EMAIL now, through the configured backend.

    Bypasses the outbox. Prints the provider's message id, or the error and its class
    (transient, permanent, account-wide); exits 1 on failure.
    """
    from taxease_auth import operations

    settings = _settings()
    _finish(asyncio.run(operations.send_test(settings, _canonical(email))))


@app.command("preview-mail")
def preview_mail(
    purpose: Annotated[MailKind, typer.Argument(help="The mail to show.")],
    locale: Annotated[str, typer.Option(help="en or fr-CA.")] = "en",
    out: Annotated[Path, typer.Option(help="Directory the files are written to.")] = Path(
        "mail-preview"
    ),
    app_name: Annotated[str, typer.Option(envvar="APP_NAME", help="Brand name.")] = "TaxEase",
    expires_minutes: Annotated[int, typer.Option(min=1, help="Code lifetime shown.")] = 5,
) -> None:
    """Write PURPOSE's mail in LOCALE (HTML and text, sample code) to OUT for review.

    Sends nothing and needs no configuration besides APP_NAME.
    """
    from taxease_auth.locales import SUPPORTED_LOCALES, supported_locale
    from taxease_auth.mail.preview import write_preview

    tag = supported_locale(locale, default="")
    if tag.lower() != locale.replace("_", "-").lower():
        typer.echo(
            f"taxease-auth: --locale must be one of {', '.join(SUPPORTED_LOCALES)}", err=True
        )
        raise typer.Exit(code=2)
    preview = write_preview(purpose, tag, out, app_name=app_name, expires_minutes=expires_minutes)
    typer.echo(f"Subject: {preview.subject}")
    typer.echo(str(preview.html))
    typer.echo(str(preview.text))


@outbox_app.command("list")
def outbox_list(
    status: Annotated[OutboxStatus | None, typer.Option(help="Only rows in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many rows.")] = 20,
) -> None:
    """List the newest outbox rows with their status, attempts, last error and provider id."""
    from taxease_auth import operations

    _finish(
        asyncio.run(
            operations.outbox_list(_settings(), status=status, limit=limit, clock=SystemClock())
        )
    )


@outbox_app.command("stats")
def outbox_stats() -> None:
    """Count rows by status; show what pending rows wait for and the commonest failures.

    Also the age of the oldest pending row: a growing one means delivery is stuck.
    """
    from taxease_auth import operations

    _finish(asyncio.run(operations.outbox_stats(_settings(), clock=SystemClock())))


@outbox_app.command("retry")
def outbox_retry(
    row_id: Annotated[int, typer.Argument(metavar="ID", help="The outbox row (see `list`).")],
) -> None:
    """Queue failed row ID again, if its code is still valid.

    Refuses (exit 1, saying why) when the row did not fail, its code expired, was used or
    replaced, or its body was cleared.
    """
    from taxease_auth import operations

    _finish(asyncio.run(operations.outbox_retry(_settings(), row_id, clock=SystemClock())))


@app.command()
def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; change nothing.")
    ] = False,
    code_margin_hours: Annotated[
        int, typer.Option(min=1, help="Keep codes this many hours past their expiry.")
    ] = 24,
) -> None:
    """Delete old codes and old final outbox rows (see --dry-run).

    Codes go once expired for longer than the margin; sent, failed and expired outbox rows
    once older than OUTBOX_RETENTION_DAYS; audit events once older than AUDIT_RETENTION_DAYS.
    Failed rows whose code expired lose their body. Sessions that ended, expired or went idle
    go (with their refresh tokens) once dead for longer than the margin.
    """
    from datetime import timedelta

    from taxease_auth import operations

    _finish(
        asyncio.run(
            operations.purge(
                _settings(),
                dry_run=dry_run,
                codes_older_than=timedelta(hours=code_margin_hours),
                clock=SystemClock(),
            )
        )
    )


@app.command()
def why(
    email: Annotated[str, typer.Argument(help="The address the user gave.")],
) -> None:
    """Why didn't EMAIL get their code? Everything about it on one screen.

    The account, the recent codes (purpose, issue time, expiry, attempts, state) with their
    mail's status, attempts, last error and provider id, the SES suppression list (with the
    SES backend), and a verdict. Never prints codes or their hashes.
    """
    from taxease_auth import operations

    settings = _settings()
    _finish(asyncio.run(operations.why(settings, _canonical(email))))


suppression_app = typer.Typer(
    help="The suppression list: addresses no mail is sent to (bounced, complained).",
    no_args_is_help=True,
)
app.add_typer(suppression_app, name="suppression")


@suppression_app.command("list")
def suppression_list(
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 100,
) -> None:
    """The suppressed addresses with reason (bounce, complaint, manual), time and detail."""
    from taxease_auth.mail.feedback import suppression_list as admin

    _finish(asyncio.run(admin.listed(_settings(), limit=limit)))


@suppression_app.command("add")
def suppression_add(
    email: Annotated[str, typer.Argument(help="The address to stop sending to.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept as the entry's detail).")] = None,
) -> None:
    """Stop sending to EMAIL (reason "manual"). An audit event records it."""
    from taxease_auth.mail.feedback import suppression_list as admin

    settings = _settings()
    _finish(asyncio.run(admin.change(settings, _canonical(email), add=True, reason_text=reason)))


@suppression_app.command("remove")
def suppression_remove(
    email: Annotated[str, typer.Argument(help="The address to send to again.")],
) -> None:
    """Send to EMAIL again (its mailbox works again). An audit event records it."""
    from taxease_auth.mail.feedback import suppression_list as admin

    settings = _settings()
    _finish(asyncio.run(admin.change(settings, _canonical(email), add=False)))


@app.command()
def audit(
    email: Annotated[
        str | None, typer.Option("--email", help="Only the events for this address.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many events, newest first.")] = 50,
) -> None:
    """Security events: codes issued, verified, failed and locked; logins; password resets.

    Each with time, outcome, purpose and client address. Addresses are stored as keyed
    fingerprints, so --email finds an address's events without the trail holding it.
    """
    from taxease_auth import operations

    settings = _settings()
    target = _canonical(email) if email is not None else None
    _finish(asyncio.run(operations.audit_trail(settings, target, limit=limit)))
