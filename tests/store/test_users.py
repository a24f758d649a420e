"""store/users.py: the user row's updates, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from taxease_auth.store import users
from taxease_auth.store.db import make_engine
from taxease_auth.store.sql import Database, database_for
from tests.conftest import SettingsFactory

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=1)
OLD_HASH = "$argon2id$v=19$m=8192,t=1,p=1$old-parameters"
REHASHED_OLD_PASSWORD = "$argon2id$v=19$m=65536,t=3,p=4$old-password-rehashed"
RESET_HASH = "$argon2id$v=19$m=65536,t=3,p=4$the-reset-password"


@pytest.fixture
async def database(make_settings: SettingsFactory) -> AsyncIterator[Database]:
    engine = make_engine(make_settings())
    database = database_for(engine)
    yield database
    await asyncio.wait_for(database.close(), timeout=5)
    await engine.dispose()


async def add_verified_user(database: Database, email: str) -> int:
    async with database.transaction() as tx:
        return await users.add(
            tx,
            email=email,
            password_hash=OLD_HASH,
            first_name="Ada",
            last_name="Lovelace",
            verified=True,
            now=NOW,
        )


async def stored_user(database: Database, user_id: int) -> users.UserRow:
    async with database.transaction() as tx:
        user = await users.get_by_id(tx, user_id)
    assert user is not None
    return user


async def record_login_upgrading(database: Database, user_id: int, *, read_hash: str) -> None:
    """A login that verified the password against ``read_hash`` and rehashed it."""
    async with database.transaction() as tx:
        await users.record_login(
            tx,
            user_id,
            now=LATER,
            new_password_hash=REHASHED_OLD_PASSWORD,
            read_password_hash=read_hash,
        )


async def test_a_login_upgrades_the_hash_it_verified(database: Database) -> None:
    user_id = await add_verified_user(database, "upgrade@example.com")

    await record_login_upgrading(database, user_id, read_hash=OLD_HASH)

    user = await stored_user(database, user_id)
    assert user.password_hash == REHASHED_OLD_PASSWORD
    assert user.last_login_at == LATER


async def test_a_reset_between_a_logins_read_and_its_hash_upgrade_survives(
    database: Database,
) -> None:
    """The login read OLD_HASH and verified the old password; before it records the login, a
    password reset commits. The login's upgrade (the old password, rehashed) must not write
    the old password back over the reset's."""
    user_id = await add_verified_user(database, "race@example.com")
    read = await stored_user(database, user_id)  # the login's read
    assert read.password_hash is not None
    async with database.transaction() as tx:  # the reset, committed meanwhile
        await users.replace_password(tx, user_id, password_hash=RESET_HASH, now=NOW)

    await record_login_upgrading(database, user_id, read_hash=read.password_hash)

    user = await stored_user(database, user_id)
    assert user.password_hash == RESET_HASH
    assert user.last_login_at == LATER  # the login itself still happened


async def test_a_hash_upgrade_needs_the_hash_it_replaces(database: Database) -> None:
    user_id = await add_verified_user(database, "no-read@example.com")

    with pytest.raises(ValueError, match="the hash it replaces"):
        async with database.transaction() as tx:
            await users.record_login(tx, user_id, now=NOW, new_password_hash=REHASHED_OLD_PASSWORD)

    assert (await stored_user(database, user_id)).password_hash == OLD_HASH
