"""Operational routes at the root: liveness, readiness, metrics."""

from __future__ import annotations

import hmac
import logging

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from limits.errors import ConfigurationError as LimitsError
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from taxease_auth import metrics as service_metrics
from taxease_auth.api.routing import api_router
from taxease_auth.auth.limits import RateLimits
from taxease_auth.config import Settings

router = api_router(tags=["operations"])
logger = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency failed; the body names it"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers, the rate-limit storage (Redis) answers when one is
    configured, and the mail backend has a sender. The body names what failed."""
    engine: AsyncEngine = request.app.state.engine
    settings: Settings = request.app.state.settings
    checks: dict[str, str] = {}
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except (SQLAlchemyError, OSError) as error:
        logger.error("readiness: database check failed: %s", type(error).__name__)
        checks["database"] = "failed"
    if settings.rate_limit_storage_url != "memory://":
        limits: RateLimits = request.app.state.rate_limits
        try:
            checks["rate_limit_storage"] = "ok" if await limits.healthy() else "failed"
        except (ConnectionError, OSError, LimitsError) as error:
            logger.error("readiness: rate-limit storage check failed: %s", type(error).__name__)
            checks["rate_limit_storage"] = "failed"
    checks["mail"] = "ok" if settings.sender else "failed: no sender configured"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format; with several processes (PROMETHEUS_MULTIPROC_DIR), the sum over
    all of them. Outside development mode only with ``Authorization: Bearer <METRICS_TOKEN>``:
    without the token (or with METRICS_TOKEN unset) the answer is the 404 of an unknown path.
    ``serve --metrics-port`` serves the same text on a private listener without a token."""
    settings: Settings = request.app.state.settings
    if not settings.development_mode and not scraper_authorised(
        settings.metrics_token, request.headers.get("authorization")
    ):
        # The counters by outcome tell whether an account exists (issue 17.3): only the
        # operator's scraper may read them, and anyone else sees no such route.
        raise HTTPException(status_code=404)
    return Response(service_metrics.render(), media_type=service_metrics.CONTENT_TYPE)


def scraper_authorised(token: SecretStr | None, authorization: str | None) -> bool:
    """Whether an Authorization header value is ``Bearer <token>``; never with no token set."""
    if token is None or not token.get_secret_value() or authorization is None:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time: a comparison that stops at the first wrong character tells how much of a
    # guess was right.
    return hmac.compare_digest(
        presented.strip().encode("utf-8"), token.get_secret_value().encode("utf-8")
    )
