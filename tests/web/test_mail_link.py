"""The mail link that scanners cannot burn (DESIGN.md §12, issue 15 item 2): every code mail
carries ``/c/{token}``; its GET (as a mail scanner or a prefetcher makes it) shows the code and
one button and changes nothing; its POST spends the code as verify-otp does, once. The token
is stored only as a keyed hash and dies with its code.

The browser half (Chromium following the link from the printed mail) is in test_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from taxease_auth.auth import mail_link
from taxease_auth.clock import ManualClock
from taxease_auth.mail.render import CODE_KINDS, MailRenderer
from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import Base, MailKind, Otp
from tests.api.conftest import (
    audit_events,
    login,
    otp_rows,
    register,
    request_reset,
    verified_user,
    verify,
)
from tests.conftest import (
    SENDER,
    STRONG_PASSWORD,
    TEST_SECRET_KEY,
    RunningApp,
    SesInbox,
    SettingsFactory,
    StartApp,
    extract_code,
)
from tests.web.test_pages import csrf_token, post_form

LINK = re.compile(r"(https?://[^\s\"'<>]+)/c/([A-Za-z0-9_-]+)")
WRONG_CODE_TEXT = "This code is incorrect or has expired."
NEW_PASSWORD = "another horse battery staple"
_CSRF_VALUE = re.compile(r'name="csrf_token" value="[^"]+"')


def link_in(body: str) -> tuple[str, str]:
    """The base address and the token of the mail link in ``body``."""
    match = LINK.search(body)
    assert match is not None, body
    return match.group(1), match.group(2)


async def mailed_link(app: RunningApp, email: str, number: int) -> tuple[str, str]:
    """The token and the code of the ``number``-th mail to ``email`` (1 = the first)."""
    mail = (await app.console_mail(email, number))[number - 1]
    return link_in(mail)[1], extract_code(mail)


@asynccontextmanager
async def another_browser(app: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no cookies of its own: a scanner, or the person's other device."""
    async with httpx.AsyncClient(
        transport=app.client._transport, base_url="http://testserver"
    ) as client:
        yield client


async def press_the_button(client: httpx.AsyncClient, token: str) -> httpx.Response:
    # A browser's CSRF token is the same on every page: read from the sign-in page, since a
    # dead link's page answers 400.
    return await post_form(client, f"/c/{token}", {}, token_from="/")


def without_tokens(html: str) -> str:
    """The page without its CSRF token and the path it was asked at."""
    return re.sub(r"/c/[^\"]*", "", _CSRF_VALUE.sub("", html))


async def test_a_scanners_get_spends_nothing_and_the_button_does(dev_app: RunningApp) -> None:
    email = "link@example.com"
    assert (await register(dev_app.client, email)).status_code == 201
    token, code = await mailed_link(dev_app, email, 1)

    async with another_browser(dev_app) as scanner:
        pages = [await scanner.get(f"/c/{token}") for _ in range(3)]
    [row] = await otp_rows(dev_app, email)
    events = [event.event for event in await audit_events(dev_app, email)]

    for page in pages:
        assert page.status_code == 200
        assert code in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
    assert (row.attempts, row.used) == (0, False)
    assert not {"code_verified", "code_failed"} & set(events)

    async with another_browser(dev_app) as person:
        pressed = await press_the_button(person, token)
        again = await press_the_button(person, token)

    assert (pressed.status_code, pressed.headers["location"]) == (303, "/?done=verified")
    assert (await login(dev_app.client, email, STRONG_PASSWORD)).status_code == 200
    assert again.status_code == 400
    assert WRONG_CODE_TEXT in again.text


async def test_the_get_spends_none_of_the_code_budgets(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(
        make_settings(
            rate_limit_verify_per_ip="1/minute", rate_limit_verify_failures_per_email="1/hour"
        )
    )
    assert (await register(app.client, "budget@example.com")).status_code == 201
    token, _ = await mailed_link(app, "budget@example.com", 1)

    for _ in range(5):
        assert (await app.client.get(f"/c/{token}")).status_code == 200
    pressed = await press_the_button(app.client, token)

    assert pressed.headers["location"] == "/?done=verified"


async def test_the_post_spends_the_apis_budgets(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(rate_limit_verify_per_ip="1/minute"))
    assert (await register(app.client, "spent@example.com")).status_code == 201
    token, _ = await mailed_link(app, "spent@example.com", 1)
    wrong = await app.client.post(
        "/api/v1/auth/verify-otp",
        json={"email": "spent@example.com", "code": "000000", "purpose": "email_verification"},
    )
    assert wrong.status_code in (400, 429)

    pressed = await press_the_button(app.client, token)

    assert pressed.status_code == 429
    assert "Too many attempts. Try again in" in pressed.text
    [row] = await otp_rows(app, "spent@example.com")
    assert not row.used


async def test_an_expired_unknown_or_malformed_token_gets_the_wrong_code_page(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    clock = ManualClock()
    app = await start_app(make_settings(), clock=clock)
    assert (await register(app.client, "late@example.com")).status_code == 201
    token, _ = await mailed_link(app, "late@example.com", 1)
    clock.advance(timedelta(minutes=app.settings.otp_expiry_minutes, seconds=1))

    expired = await app.client.get(f"/c/{token}")
    pressed = await press_the_button(app.client, token)
    unknown = await app.client.get(f"/c/{mail_link.new_token()}")
    malformed = await app.client.get("/c/not-a-token")

    for page in (expired, pressed, unknown, malformed):
        assert page.status_code == 400
        assert WRONG_CODE_TEXT in page.text
    assert without_tokens(expired.text) == without_tokens(unknown.text)
    assert without_tokens(expired.text) == without_tokens(malformed.text)
    [row] = await otp_rows(app, "late@example.com")
    assert not row.used


async def test_a_link_dies_with_its_code_when_a_new_code_retires_it(dev_app: RunningApp) -> None:
    assert (await register(dev_app.client, "twice@example.com")).status_code == 201
    first, _ = await mailed_link(dev_app, "twice@example.com", 1)
    await dev_app.client.post(
        "/api/v1/auth/request-otp",
        json={"email": "twice@example.com", "purpose": "email_verification"},
    )
    second, _ = await mailed_link(dev_app, "twice@example.com", 2)

    assert (await dev_app.client.get(f"/c/{first}")).status_code == 400
    assert (await dev_app.client.get(f"/c/{second}")).status_code == 200


async def test_a_link_dies_when_its_code_has_no_tries_left(dev_app: RunningApp) -> None:
    answer = await register(dev_app.client, "tries@example.com")
    registration_id = answer.json()["registration_id"]
    token, code = await mailed_link(dev_app, "tries@example.com", 1)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(dev_app.settings.otp_max_attempts):
        await verify(dev_app.client, "tries@example.com", wrong, registration_id=registration_id)

    assert (await dev_app.client.get(f"/c/{token}")).status_code == 400
    assert (await press_the_button(dev_app.client, token)).status_code == 400


async def test_a_login_link_signs_in_the_browser_that_presses_the_button(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(login_otp_required=True))
    await verified_user(app, "signin@example.com")
    assert (await login(app.client, "signin@example.com", STRONG_PASSWORD)).status_code == 202
    token, _ = await mailed_link(app, "signin@example.com", 2)

    async with another_browser(app) as person:
        shown = await person.get(f"/c/{token}")
        pressed = await press_the_button(person, token)
        account = await person.get("/account")
        again = await press_the_button(person, token)

    assert "Finish signing in" in shown.text
    assert (pressed.status_code, pressed.headers["location"]) == (303, "/account")
    assert account.status_code == 200
    assert "signin@example.com" in account.text
    assert again.status_code == 400


async def test_a_reset_link_leads_to_the_new_password_page_once(dev_app: RunningApp) -> None:
    email = "forgot@example.com"
    await verified_user(dev_app, email)
    assert (await request_reset(dev_app.client, email)).status_code == 202
    token, code = await mailed_link(dev_app, email, 2)

    async with another_browser(dev_app) as person:
        pressed = await press_the_button(person, token)
        reset_page = await person.get("/reset")
        again = await press_the_button(person, token)
        changed = await post_form(person, "/reset", {"code": code, "new_password": NEW_PASSWORD})

    assert (pressed.status_code, pressed.headers["location"]) == (303, "/reset")
    assert f'value="{code}"' in reset_page.text
    assert again.status_code == 400
    assert changed.headers["location"] == "/?done=reset"
    assert (await login(dev_app.client, email, NEW_PASSWORD)).status_code == 200


async def test_a_link_from_another_browser_does_not_prove_the_registration(
    dev_app: RunningApp,
) -> None:
    # DESIGN.md §11: a squatter registers the address right after its owner did; the owner
    # follows the squatter's link from the mail. Without the registration's proof (the
    # sign-up browser's flow), the address is verified with no password, as verify-otp does
    # without registration_id: the squatter's password must not be activated.
    email = "owner@example.com"
    await post_form(
        dev_app.client,
        "/signup",
        {
            "email": email,
            "first_name": "Olive",
            "last_name": "Owner",
            "password": STRONG_PASSWORD,
            "accept_terms": "yes",
        },
    )
    squatter_password = "squatter horse battery staple"
    assert (await register(dev_app.client, email, squatter_password)).status_code == 201
    squatters, _ = await mailed_link(dev_app, email, 2)

    async with another_browser(dev_app) as owner_phone:
        pressed = await press_the_button(owner_phone, squatters)

    assert pressed.headers["location"] == "/?done=verified"
    assert (await login(dev_app.client, email, squatter_password)).status_code == 401


async def test_the_sign_up_browser_following_its_own_link_keeps_its_password(
    dev_app: RunningApp,
) -> None:
    email = "mine@example.com"
    await post_form(
        dev_app.client,
        "/signup",
        {
            "email": email,
            "first_name": "Mia",
            "last_name": "Mine",
            "password": STRONG_PASSWORD,
            "accept_terms": "yes",
        },
    )
    squatter = await register(dev_app.client, email, "squatter horse battery staple")
    assert squatter.status_code == 201
    mine, _ = await mailed_link(dev_app, email, 1)
    await mailed_link(dev_app, email, 2)

    pressed = await press_the_button(dev_app.client, mine)

    assert pressed.headers["location"] == "/?done=verified"
    assert (await login(dev_app.client, email, STRONG_PASSWORD)).status_code == 200


async def test_the_raw_token_is_not_in_the_database(dev_app: RunningApp) -> None:
    email = "stored@example.com"
    assert (await register(dev_app.client, email)).status_code == 201
    token, _ = await mailed_link(dev_app, email, 1)
    await dev_app.settled_outbox()  # sent: the outbox body (which holds the link) is cleared

    cells: list[str] = []
    async with make_sessionmaker(dev_app.app.state.engine)() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table))).all()
            cells += [str(cell) for row in rows for cell in row]
        [stored] = (await session.execute(select(Otp.link_token_hash))).scalars().all()

    assert cells
    assert not [cell for cell in cells if token in cell]
    assert stored == mail_link.token_hash(TEST_SECRET_KEY, token)
    assert (await dev_app.client.get(f"/c/{token}")).status_code == 200


async def test_the_link_page_loads_nothing_from_elsewhere(dev_app: RunningApp) -> None:
    assert (await register(dev_app.client, "page@example.com")).status_code == 201
    token, _ = await mailed_link(dev_app, "page@example.com", 1)

    page = await dev_app.client.get(f"/c/{token}")

    addresses = re.findall(r'(?:src|href|action)="([^"]*)"', page.text)
    assert addresses
    assert all(address.startswith(("/", "#")) for address in addresses), addresses
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.text.count("<form") == 2  # the language switch and the one button
    assert 'name="code"' not in page.text  # nothing to type: the button sends the token


async def test_the_language_switch_comes_back_to_the_link_page(dev_app: RunningApp) -> None:
    assert (await register(dev_app.client, "langue@example.com")).status_code == 201
    token, _ = await mailed_link(dev_app, "langue@example.com", 1)
    csrf = await csrf_token(dev_app.client, f"/c/{token}")

    switched = await dev_app.client.post(
        "/language", data={"csrf_token": csrf, "locale": "fr-CA", "next": f"/c/{token}"}
    )
    page = await dev_app.client.get(f"/c/{token}")

    assert switched.headers["location"] == f"/c/{token}"
    assert "Confirmer mon adresse courriel" in page.text


@pytest.mark.parametrize("base", [None, "https://auth.taxease.example"])
async def test_production_links_only_with_public_base_url(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory, base: str | None
) -> None:
    ses.verify_identity(SENDER)
    app = await start_app(ses_settings(public_base_url=base))
    assert (await register(app.client, "prod@example.com")).status_code == 201

    [mail] = await ses.wait_for("prod@example.com", 1)

    if base is None:
        assert "/c/" not in mail["body"]
    else:
        found_base, token = link_in(mail["body"])
        assert found_base == base
        assert mail_link.is_well_formed(token)
        assert extract_code(mail["body"]) == mail_link.code_for(token, 6)


# --- the mail itself ----------------------------------------------------------------------------

SAMPLE = "http://127.0.0.1:8001/c/AAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize("kind", sorted(CODE_KINDS))
@pytest.mark.parametrize(("locale", "words"), [("en", "open this page"), ("fr-CA", "ouvrez")])
def test_a_code_mail_carries_its_link_in_both_languages(
    kind: MailKind, locale: str, words: str
) -> None:
    mail = MailRenderer("TaxEase").render(
        kind, code="123456", expires_minutes=5, locale=locale, link=SAMPLE
    )

    assert f'href="{SAMPLE}"' in mail.html
    assert f"\n{SAMPLE}\n" in mail.text
    assert words in mail.text
    assert extract_code(mail.text) == extract_code(mail.html) == "123456"


def test_a_notice_never_carries_a_link() -> None:
    mail = MailRenderer("TaxEase").render(MailKind.PASSWORD_CHANGED, link=SAMPLE)

    assert SAMPLE not in mail.html + mail.text


def test_tokens_codes_and_hashes() -> None:
    tokens = {mail_link.new_token() for _ in range(200)}
    codes = {mail_link.code_for(token, 6) for token in tokens}

    assert len(tokens) == 200
    assert all(mail_link.is_well_formed(token) for token in tokens)
    assert all(len(code) == 6 and code.isdigit() for code in codes)
    assert len(codes) > 190  # 200 draws from a million
    assert mail_link.code_for("A" * 22, 8) == mail_link.code_for("A" * 22, 8)
    token = next(iter(tokens))
    assert mail_link.token_hash("key one", token) != mail_link.token_hash("key two", token)
    assert token not in mail_link.token_hash("key one", token)
