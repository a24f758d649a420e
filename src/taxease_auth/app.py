"""create_app(settings) -> FastAPI. The lifespan owns the engine, the mail backend and the
embedded delivery worker; nothing is created at import time."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from taxease_auth import __version__, metrics
from taxease_auth.api import auth as auth_routes
from taxease_auth.api import dev as dev_routes
from taxease_auth.api import errors as api_errors
from taxease_auth.api import health as health_routes
from taxease_auth.api import sessions as session_routes
from taxease_auth.api import well_known as well_known_routes
from taxease_auth.api.body_limit import BodySizeLimit
from taxease_auth.api.observability import RequestObservability
from taxease_auth.api.routing import operation_id
from taxease_auth.auth.guessing import refuse_likely_guessing
from taxease_auth.auth.limits import RateLimits
from taxease_auth.auth.mail_link import MailLinks
from taxease_auth.auth.passwords import PasswordHasher, common_passwords
from taxease_auth.auth.service import AuthService
from taxease_auth.auth.sessions import Sessions
from taxease_auth.auth.tokens import TokenService
from taxease_auth.clock import Clock, SystemClock
from taxease_auth.config import Settings, load_settings
from taxease_auth.logs import configure_logging
from taxease_auth.mail.backends import build_backend
from taxease_auth.mail.backends.base import MailBackend
from taxease_auth.mail.render import MailRenderer
from taxease_auth.mail.worker import build_worker
from taxease_auth.ratelimit_storage import make_storage
from taxease_auth.store.budget import warn_if_over_budget
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.sql import database_for
from taxease_auth.web import install as web

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    mail_backend: MailBackend | None = None,
) -> FastAPI:
    """Build the application.

    Without ``settings`` (the uvicorn factory path) the settings come from the environment and
    ``.env``, and logging is configured from them. Tests pass their own settings, clock and,
    where they read the console, a console backend writing to a buffer.
    """
    serving = settings is None  # uvicorn's factory path: this process is the server
    if settings is None:
        settings = load_settings()
        configure_logging(settings)
    refuse_likely_guessing(settings)  # ConfigError in production when codes are guessable
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for warning in settings.startup_warnings():
            logger.warning(warning)
        engine = make_engine(settings)
        await warn_if_over_budget(engine, settings)  # PostgreSQL: would this process fit?
        sessions = make_sessionmaker(engine)
        backend = mail_backend or build_backend(settings)
        hasher = PasswordHasher(settings)
        await anyio.to_thread.run_sync(hasher.burn_in)
        await anyio.to_thread.run_sync(common_passwords)  # load the list before the first request
        # On SQLite this takes the single-worker lock: a second worker on the same database
        # stops the start-up here with OutboxLocked.
        database = database_for(engine, pool_size=settings.database_pool_size)
        worker = (
            build_worker(
                settings, sessions=sessions, backend=backend, clock=clock, database=database
            )
            if settings.embedded_worker
            else None
        )
        app.state.settings = settings
        app.state.engine = engine
        app.state.mail_backend = backend
        app.state.worker = worker
        limits_storage = make_storage(settings.rate_limit_storage_url)
        app.state.rate_limits = rate_limits = RateLimits(settings, limits_storage.storage)
        app.state.sessions = sessions_service = Sessions(
            settings=settings,
            database=database,
            clock=clock,
            tokens=tokens,
            limits=rate_limits,
        )
        app.state.auth_service = AuthService(
            settings=settings,
            database=database,
            clock=clock,
            hasher=hasher,
            sessions=sessions_service,
            renderer=MailRenderer(settings.app_name, default_locale=settings.default_locale),
            limits=rate_limits,
            mail_queued=worker.wake if worker else _nothing,
        )
        app.state.mail_links = MailLinks(settings, database, clock)  # /c/{token}, §12
        worker_task = asyncio.create_task(worker.run()) if worker else None
        if serving:
            _tune_garbage_collector()
        try:
            yield
        finally:
            await app.state.auth_service.drain_requested_codes()
            if worker is not None and worker_task is not None:
                await worker.stop()
                await worker_task
            await backend.aclose()
            await database.close()
            await engine.dispose()
            limits_storage.close()
            metrics.mark_process_dead()

    app = FastAPI(
        title=f"{settings.app_name} Auth",
        version=__version__,
        description="Accounts and email ownership proven by one-time codes mailed through AWS SES.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    # Keys derived from SECRET_KEY (no I/O): the well-known routes publish them.
    app.state.tokens = tokens = TokenService(settings, clock)
    api_errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_body_bytes)
    # Added last, so outermost: times, counts and logs every answer, the 413s included.
    app.add_middleware(
        RequestObservability,
        trusted_proxies=settings.trusted_proxies,
        access_log=settings.access_log,
    )
    # The API's routes join the app's own router rather than being included: FastAPI wraps an
    # included router and matches each request against its routes twice (once to pick the
    # router, once inside it): 16 route checks for /me. Taken in, /me runs 516 Python calls
    # instead of 838, token/refresh 686 instead of 901 (bench/cpu.py under cProfile). Each
    # route carries its full path, tags and operation id already (fixed when it is declared,
    # api/routing.py), so the app and its OpenAPI document see the same routes.
    for api_router in (
        auth_routes.router,
        session_routes.router,
        well_known_routes.router,
        health_routes.router,
    ):
        app.router.routes.extend(api_router.routes)
    web.install(app, settings)  # the pages (DESIGN.md §12), their headers and /static/
    if settings.development_mode:
        # The development mailbox shows live codes: it does not exist in production mode.
        app.include_router(dev_routes.router)
    return app


def _tune_garbage_collector() -> None:
    """Keep the collector's pauses out of the answers' latency (`make bench`).

    What start-up built (modules, the app, templates: ~150k objects) lives as long as the
    process, yet every full collection walked it again, a pause of ~50 ms that showed as the
    p99 of every route. Frozen, it is never walked again. (A larger first generation was
    tried too: no gain.)
    """
    gc.collect()
    gc.freeze()


def _nothing() -> None:
    """No embedded worker: a separate `taxease-auth worker` polls the outbox."""
