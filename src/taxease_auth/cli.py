"""The `taxease-auth` command line: serve, worker, db."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
import uvicorn

from taxease_auth.config import ConfigError, Settings, load_settings
from taxease_auth.logs import configure_logging

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
        return load_settings()
    except ConfigError as error:
        typer.echo(f"taxease-auth: {error}", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8001,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
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
    configure_logging(settings)
    uvicorn.run(
        "taxease_auth.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        proxy_headers=False,  # client addresses are taken from TRUSTED_PROXIES, not uvicorn
        server_header=False,
    )


@app.command()
def worker() -> None:
    """Deliver queued mail without serving HTTP (to scale delivery out, or with
    EMBEDDED_WORKER=false). Stops cleanly on SIGINT/SIGTERM after in-flight sends."""
    settings = _settings()
    configure_logging(settings)
    asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> None:
    from taxease_auth.clock import SystemClock
    from taxease_auth.mail.backends import build_backend
    from taxease_auth.mail.worker import DeliveryWorker
    from taxease_auth.store.db import make_engine, make_sessionmaker

    engine = make_engine(settings)
    backend = build_backend(settings)
    delivery = DeliveryWorker(
        sessions=make_sessionmaker(engine),
        backend=backend,
        sender=settings.sender or "",
        clock=SystemClock(),
        lease_seconds=settings.outbox_lease_seconds,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: asyncio.ensure_future(delivery.stop()))
    try:
        await delivery.run()
    finally:
        await backend.aclose()
        await engine.dispose()


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
