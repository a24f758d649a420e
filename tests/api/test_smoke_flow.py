from __future__ import annotations

from tests.conftest import STRONG_PASSWORD, RunningApp


async def test_register_verify_login_me(dev_app: RunningApp) -> None:
    client = dev_app.client
    response = await client.post(
        "/api/v1/auth/register",
        json={
            "email": "test@example.com",
            "password": STRONG_PASSWORD,
            "first_name": "Test",
            "last_name": "User",
            "accept_terms": True,
        },
    )
    assert response.status_code == 201, response.text
    code = await dev_app.latest_code("test@example.com")
    response = await client.post(
        "/api/v1/auth/verify-otp",
        json={"email": "test@example.com", "code": code, "purpose": "email_verification"},
    )
    assert response.json() == {"message": "OTP verified successfully"}
    response = await client.post(
        "/api/v1/auth/login", json={"email": "test@example.com", "password": STRONG_PASSWORD}
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == "test@example.com"
