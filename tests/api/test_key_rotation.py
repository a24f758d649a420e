"""SECRET_KEY rotation: PREVIOUS_SECRET_KEYS keep live codes and tokens working; new ones are
made with the new key only."""

from __future__ import annotations

from tests.api.conftest import code_in_mail, login_token, me, register, verified_user, verify
from tests.conftest import STRONG_PASSWORD, TEST_SECRET_KEY, SettingsFactory, StartApp

ROTATED_KEY = "testing-rotated-secret-key-testing-0002"


async def test_a_code_issued_before_rotation_still_verifies(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    before = await start_app(make_settings())
    await register(before.client, "rotate@example.com")
    code = await code_in_mail(before, "rotate@example.com", 1)

    after = await start_app(
        make_settings(secret_key=ROTATED_KEY, previous_secret_keys=[TEST_SECRET_KEY])
    )

    assert (await verify(after.client, "rotate@example.com", code)).status_code == 200


async def test_a_code_from_a_retired_key_no_longer_verifies(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    before = await start_app(make_settings())
    await register(before.client, "gone@example.com")
    code = await code_in_mail(before, "gone@example.com", 1)

    after = await start_app(make_settings(secret_key=ROTATED_KEY))

    assert (await verify(after.client, "gone@example.com", code)).status_code == 400


async def test_tokens_survive_rotation_and_new_ones_use_the_new_key(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    before = await start_app(make_settings())
    await verified_user(before, "token@example.com")
    old_token = await login_token(before.client, "token@example.com", STRONG_PASSWORD)

    after = await start_app(
        make_settings(secret_key=ROTATED_KEY, previous_secret_keys=[TEST_SECRET_KEY])
    )
    new_token = await login_token(after.client, "token@example.com", STRONG_PASSWORD)
    only_old_key = await start_app(make_settings())

    assert (await me(after.client, old_token)).status_code == 200
    assert (await me(after.client, new_token)).status_code == 200
    # Signed with the new key: an instance that only knows the old key refuses it.
    assert (await me(only_old_key.client, new_token)).status_code == 401
