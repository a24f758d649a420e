"""What the service stores fits its columns. PostgreSQL refuses a string longer than its
VARCHAR (SQLite stores it whole), which would turn the request into a 500."""

from __future__ import annotations

from sqlalchemy import select

from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import IP_MAX_LENGTH, AuditEvent
from tests.conftest import SettingsFactory, StartApp


async def test_a_forwarded_address_with_a_long_ipv6_zone_is_audited_within_its_column(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    # A trusted proxy forwards what it was given; Python accepts an IPv6 zone of any length.
    forwarded = "fe80::1%" + "z" * 200
    app = await start_app(make_settings(trusted_proxies=["127.0.0.0/8"]))

    response = await app.client.post(
        "/api/v1/auth/login",
        json={"email": "zone@example.com", "password": "not the password at all"},
        headers={"X-Forwarded-For": forwarded},
    )

    assert response.status_code == 401, response.text
    async with make_sessionmaker(app.app.state.engine)() as session:
        [event] = (await session.scalars(select(AuditEvent))).all()
    assert event.ip is not None
    assert forwarded.startswith(event.ip)
    assert len(event.ip) == IP_MAX_LENGTH
