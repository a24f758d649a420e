"""The operational routes at the root: liveness, readiness with named checks, metrics."""

from __future__ import annotations

from tests.api.conftest import register
from tests.conftest import RunningApp


async def test_healthz_answers_ok(dev_app: RunningApp) -> None:
    response = await dev_app.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_names_each_check(dev_app: RunningApp) -> None:
    response = await dev_app.client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "mail": "ok"}}


async def test_metrics_are_prometheus_text(dev_app: RunningApp) -> None:
    await register(dev_app.client, "metrics@example.com")

    response = await dev_app.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE taxease_codes_issued_total counter" in response.text
    assert 'taxease_codes_issued_total{purpose="email_verification"}' in response.text
    assert "metrics@example.com" not in response.text


async def test_operational_routes_are_not_under_the_api_prefix(dev_app: RunningApp) -> None:
    for path in ("/api/v1/healthz", "/api/v1/readyz", "/api/v1/metrics"):
        assert (await dev_app.client.get(path)).status_code == 404
