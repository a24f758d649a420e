"""The pages without a browser (DESIGN.md §12): the flow through forms, CSRF refusals, the
headers, the cookies' flags, the language choice, and the same answers for known and unknown
addresses. The browser tests (test_browser.py) cover what only a browser shows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

import httpx
import pytest
from fastapi import Response
from pydantic import ValidationError
from sqlalchemy import select

from taxease_auth.clock import ManualClock
from taxease_auth.config import Settings
from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import User
from taxease_auth.web.browser import Browser, PageSession
from taxease_auth.web.headers import CONTENT_SECURITY_POLICY
from taxease_auth.web.locale import choose_locale
from tests.conftest import (
    STRONG_PASSWORD,
    TEST_SECRET_KEY,
    RunningApp,
    SettingsFactory,
    StartApp,
)

PAGES = ["/", "/signup", "/forgot"]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def csrf_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    match = _CSRF.search(page.text)
    assert match is not None
    return match.group(1)


async def post_form(
    client: httpx.AsyncClient, path: str, form: dict[str, str], *, token_from: str | None = None
) -> httpx.Response:
    token = await csrf_token(client, token_from or path)
    return await client.post(path, data={"csrf_token": token, **form})


async def sign_up(app: RunningApp, email: str, password: str = STRONG_PASSWORD) -> httpx.Response:
    return await post_form(
        app.client,
        "/signup",
        {
            "email": email,
            "first_name": "Ada",
            "last_name": "Tremblay",
            "password": password,
            "accept_terms": "yes",
        },
    )


async def signed_up_and_verified(app: RunningApp, email: str) -> None:
    answer = await sign_up(app, email)
    assert answer.status_code == 303
    code = await app.latest_code(email)
    verified = await post_form(app.client, "/verify", {"code": code})
    assert verified.headers["location"] == "/?done=verified"


def _without_tokens(html: str) -> str:
    return _CSRF.sub("", html)


# --- the flow -------------------------------------------------------------------------------


async def test_sign_up_verify_with_a_pasted_code_sign_in_and_sign_out(dev_app: RunningApp) -> None:
    client = dev_app.client
    answer = await sign_up(dev_app, "ada@example.com")
    assert (answer.status_code, answer.headers["location"]) == (303, "/verify")
    verify_page = await client.get("/verify")
    assert 'autocomplete="one-time-code"' in verify_page.text
    assert 'inputmode="numeric"' in verify_page.text

    code = await dev_app.latest_code("ada@example.com")
    pasted = f" {code[:3]} - {code[3:]} "  # as copied from a mail, with a space and a dash
    verified = await post_form(client, "/verify", {"code": pasted})
    assert (verified.status_code, verified.headers["location"]) == (303, "/?done=verified")

    signed_in = await post_form(
        client, "/", {"email": "Ada@Example.com", "password": STRONG_PASSWORD}
    )
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/account")
    account = await client.get("/account")
    assert account.status_code == 200
    assert "Ada Tremblay" in account.text
    assert "ada@example.com" in account.text

    signed_out = await post_form(client, "/account", {"action": "sign_out"})
    assert signed_out.headers["location"] == "/?done=signed_out"
    assert (await client.get("/account")).headers["location"] == "/"


async def test_the_page_flow_verifies_its_own_registration(dev_app: RunningApp) -> None:
    # DESIGN.md §11 "Registration binding": a second registration of the address (a squatter's,
    # through the API) does not take over the code the page's registration was sent.
    await sign_up(dev_app, "bound@example.com")
    first_code = await dev_app.latest_code("bound@example.com")
    squatter = await dev_app.client.post(
        "/api/v1/auth/register",
        json={
            "email": "bound@example.com",
            "password": "squatter horse battery staple",
            "first_name": "Sam",
            "last_name": "Smith",
            "accept_terms": True,
        },
    )
    assert squatter.status_code == 201
    await dev_app.latest_code("bound@example.com", count=2)

    verified = await post_form(dev_app.client, "/verify", {"code": first_code})

    assert verified.headers["location"] == "/?done=verified"
    signed_in = await post_form(
        dev_app.client, "/", {"email": "bound@example.com", "password": STRONG_PASSWORD}
    )
    assert signed_in.headers["location"] == "/account"


async def test_a_wrong_code_shows_the_generic_error_tied_to_the_field(
    dev_app: RunningApp,
) -> None:
    await sign_up(dev_app, "wrong@example.com")
    code = await dev_app.latest_code("wrong@example.com")
    wrong = "000000" if code != "000000" else "111111"

    answer = await post_form(dev_app.client, "/verify", {"code": wrong})

    assert answer.status_code == 400
    assert 'aria-describedby="code-hint code-error"' in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert "autofocus" in answer.text
    assert "This code is incorrect or has expired." in answer.text


async def test_unicode_digits_are_refused_like_the_api(dev_app: RunningApp) -> None:
    await sign_up(dev_app, "digits@example.com")
    code = await dev_app.latest_code("digits@example.com")
    full_width = "".join(chr(ord(digit) + 0xFEE0) for digit in code)

    answer = await post_form(dev_app.client, "/verify", {"code": full_width})

    assert answer.status_code == 422
    assert 'id="code-error"' in answer.text


async def test_password_reset_through_the_pages_ends_the_browser_session(
    dev_app: RunningApp,
) -> None:
    client = dev_app.client
    await signed_up_and_verified(dev_app, "reset@example.com")
    await post_form(client, "/", {"email": "reset@example.com", "password": STRONG_PASSWORD})
    assert (await client.get("/account")).status_code == 200

    asked = await post_form(client, "/forgot", {"email": "reset@example.com"})
    assert asked.headers["location"] == "/reset"
    code = await dev_app.latest_code("reset@example.com", count=2)
    new_password = "a different horse staple battery"
    done = await post_form(client, "/reset", {"code": code, "new_password": new_password})
    assert done.headers["location"] == "/?done=reset"

    assert (await client.get("/account")).headers["location"] == "/"
    again = await post_form(client, "/", {"email": "reset@example.com", "password": new_password})
    assert again.headers["location"] == "/account"


async def test_login_code_step_when_login_otp_required(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(login_otp_required=True))
    await signed_up_and_verified(app, "otp@example.com")

    challenged = await post_form(
        app.client, "/", {"email": "otp@example.com", "password": STRONG_PASSWORD}
    )
    assert challenged.headers["location"] == "/verify"
    assert "Enter your sign-in code" in (await app.client.get("/verify")).text
    code = await app.latest_code("otp@example.com", count=2)
    signed_in = await post_form(app.client, "/verify", {"code": code})

    assert signed_in.headers["location"] == "/account"
    assert (await app.client.get("/account")).status_code == 200


async def test_sign_out_everywhere_ends_every_session(dev_app: RunningApp) -> None:
    await signed_up_and_verified(dev_app, "all@example.com")
    other = httpx.AsyncClient(transport=dev_app.client._transport, base_url="http://testserver")
    async with other:
        for client in (dev_app.client, other):
            await post_form(client, "/", {"email": "all@example.com", "password": STRONG_PASSWORD})
        assert (await other.get("/account")).status_code == 200
        assert (await dev_app.client.get("/account")).text.count('value="end_session"') == 2

        await post_form(dev_app.client, "/account", {"action": "sign_out_everywhere"})

        assert (await other.get("/account")).status_code == 303


# --- CSRF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/signup", "/forgot", "/language"])
async def test_a_form_without_its_csrf_token_is_refused(dev_app: RunningApp, path: str) -> None:
    await dev_app.client.get(path if path != "/language" else "/")  # the CSRF cookie is set

    answer = await dev_app.client.post(path, data={"email": "csrf@example.com"})

    assert answer.status_code == 403
    assert await dev_app.outbox() == []


async def test_a_token_made_for_another_browser_is_refused(dev_app: RunningApp) -> None:
    other = httpx.AsyncClient(transport=dev_app.client._transport, base_url="http://testserver")
    async with other:
        foreign = await csrf_token(other, "/forgot")
    await dev_app.client.get("/forgot")  # this browser's own CSRF cookie

    answer = await dev_app.client.post(
        "/forgot", data={"csrf_token": foreign, "email": "csrf@example.com"}
    )

    assert answer.status_code == 403
    assert await dev_app.outbox() == []


async def test_a_forged_session_cookie_signs_nobody_in(dev_app: RunningApp) -> None:
    dev_app.client.cookies.set("taxease_session", "A" * 200)

    answer = await dev_app.client.get("/account")

    assert (answer.status_code, answer.headers["location"]) == (303, "/")


# --- headers and cookies --------------------------------------------------------------------


@pytest.mark.parametrize("path", [*PAGES, "/verify", "/account"])
async def test_every_page_sends_the_security_headers(dev_app: RunningApp, path: str) -> None:
    answer = await dev_app.client.get(path)

    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"


async def test_static_files_are_served_with_nosniff_and_the_policy(dev_app: RunningApp) -> None:
    answer = await dev_app.client.get("/static/site.css")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/css")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_development_cookies_are_httponly_lax_without_host_prefix(
    dev_app: RunningApp,
) -> None:
    answer = await dev_app.client.get("/")
    cookie = answer.headers["set-cookie"]

    assert cookie.startswith("taxease_csrf=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie


def test_production_session_cookie_is_host_prefixed_secure_httponly_lax() -> None:
    settings = Settings(
        _env_file=None,
        development_mode=False,
        secret_key=TEST_SECRET_KEY,
        aws_ses_from_email="no-reply@taxease.example",
    )
    browser = Browser(settings)
    response = Response()
    browser.set_session(response, PageSession("sid", "access", "refresh"))

    header = response.headers["set-cookie"]
    parsed = SimpleCookie()
    parsed.load(header)
    morsel = parsed["__Host-taxease_session"]
    assert morsel["secure"] is True
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "lax"
    assert morsel["path"] == "/"
    assert not morsel["domain"]
    # Sealed: neither token is readable in the cookie.
    assert "access" not in morsel.value
    assert "refresh" not in morsel.value


# --- languages ------------------------------------------------------------------------------


def test_locale_choice_cookie_then_accept_language_then_default() -> None:
    assert choose_locale("fr-CA", "en-US,en;q=0.9", "en") == "fr-CA"
    assert choose_locale(None, "fr-FR,fr;q=0.9,en;q=0.5", "en") == "fr-CA"
    assert choose_locale(None, "de, en;q=0.1, fr;q=0.5", "en") == "fr-CA"
    assert choose_locale("klingon", "fr;q=0", "fr-CA") == "fr-CA"
    assert choose_locale(None, None, "en") == "en"


async def test_the_language_switch_keeps_its_choice_in_a_cookie(dev_app: RunningApp) -> None:
    client = dev_app.client
    english = await client.get("/signup", headers={"accept-language": "en"})
    assert '<html lang="en">' in english.text

    switched = await post_form(
        client, "/language", {"locale": "fr-CA", "next": "/signup"}, token_from="/signup"
    )
    assert switched.headers["location"] == "/signup"
    french = await client.get("/signup", headers={"accept-language": "en"})

    assert '<html lang="fr-CA">' in french.text
    assert "Adresse courriel" in french.text
    assert "Créer un compte" in french.text


async def test_the_language_switch_never_redirects_elsewhere(dev_app: RunningApp) -> None:
    answer = await post_form(
        dev_app.client,
        "/language",
        {"locale": "fr-CA", "next": "https://evil.example/"},
        token_from="/",
    )

    assert answer.headers["location"] == "/"


async def test_accept_language_picks_french(dev_app: RunningApp) -> None:
    page = await dev_app.client.get("/", headers={"accept-language": "fr-CA,fr;q=0.9"})

    assert '<html lang="fr-CA">' in page.text
    assert "Mot de passe oublié\u00a0?" in page.text


# --- one answer for known and unknown addresses ---------------------------------------------


async def test_pages_answer_the_same_for_known_and_unknown_addresses(dev_app: RunningApp) -> None:
    await signed_up_and_verified(dev_app, "known@example.com")
    answers: dict[str, list[tuple[int, str]]] = {"forgot": [], "signup": [], "signin": []}
    for email in ("known@example.com", "nobody@example.com"):
        forgot = await post_form(dev_app.client, "/forgot", {"email": email})
        answers["forgot"].append((forgot.status_code, forgot.headers["location"]))
        signup = await sign_up(dev_app, email)
        answers["signup"].append((signup.status_code, signup.headers["location"]))
        signin = await post_form(dev_app.client, "/", {"email": email, "password": "wrong " * 3})
        page = _without_tokens(signin.text).replace(email, "EMAIL")
        answers["signin"].append((signin.status_code, page))

    for flow, (known, unknown) in answers.items():
        assert known == unknown, flow


# --- sessions and budgets shared with the API -----------------------------------------------


async def test_an_expired_access_token_is_refreshed_and_the_cookie_rotated(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    clock = ManualClock()
    app = await start_app(make_settings(), clock=clock)
    await signed_up_and_verified(app, "refresh@example.com")
    await post_form(app.client, "/", {"email": "refresh@example.com", "password": STRONG_PASSWORD})
    before = app.client.cookies["taxease_session"]

    clock.advance(timedelta(minutes=app.settings.access_token_expire_minutes + 1))
    account = await app.client.get("/account")

    assert account.status_code == 200
    assert app.client.cookies["taxease_session"] != before
    assert (await app.client.get("/account")).status_code == 200


async def test_the_pages_spend_the_apis_budgets(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(rate_limit_login_per_ip="2/minute"))
    for _ in range(2):
        answer = await app.client.post(
            "/api/v1/auth/login", json={"email": "budget@example.com", "password": "x" * 12}
        )
        assert answer.status_code == 401

    page = await post_form(app.client, "/", {"email": "budget@example.com", "password": "x" * 12})

    assert page.status_code == 429
    assert "Too many attempts. Try again in" in page.text


async def test_a_correct_password_of_an_unverified_address_leads_to_the_code_page(
    dev_app: RunningApp,
) -> None:
    await sign_up(dev_app, "later@example.com")
    await dev_app.latest_code("later@example.com")
    other = httpx.AsyncClient(transport=dev_app.client._transport, base_url="http://testserver")
    async with other:
        answer = await post_form(
            other, "/", {"email": "later@example.com", "password": STRONG_PASSWORD}
        )
        assert answer.headers["location"] == "/verify?done=unverified"
        resent = await post_form(other, "/verify", {"action": "resend"})
        assert resent.headers["location"] == "/verify?done=sent"
        code = await dev_app.latest_code("later@example.com", count=2)
        verified = await post_form(other, "/verify", {"code": code})

    assert verified.headers["location"] == "/?done=verified"


@pytest.mark.parametrize(
    ("password", "text"),
    [
        ("short", "The password must have at least 12 characters."),
        ("ada tremblay horse", "must not contain your email address or your name"),
        ("abcdefghijklmnop", "must not be a repeated or sequential pattern"),
    ],
)
async def test_the_password_policy_answers_in_page_words(
    dev_app: RunningApp, password: str, text: str
) -> None:
    answer = await sign_up(dev_app, "policy@example.com", password=password)

    assert answer.status_code == 422
    assert text in answer.text
    assert 'id="password-error"' in answer.text


async def test_the_code_page_shows_the_resend_cooldown(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(otp_resend_cooldown_seconds=60))
    await sign_up(app, "cooldown@example.com")

    page = await app.client.get("/verify")
    resent = await post_form(app.client, "/verify", {"action": "resend"})

    assert re.search(r'data-countdown="(59|60)"', page.text)
    assert re.search(r"You can ask for a new code in (59|60) seconds\.", page.text)
    assert resent.status_code == 429
    assert "Too many attempts. Try again in" in resent.text


# --- DISPLAY_TIMEZONE -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "shown"), [(None, "7:00:00\u202fAM"), ("Asia/Kolkata", "5:30:00\u202fPM")]
)
async def test_the_account_page_prints_times_in_the_display_timezone(
    start_app: StartApp, make_settings: SettingsFactory, zone: str | None, shown: str
) -> None:
    clock = ManualClock(datetime(2026, 12, 5, 12, 0, tzinfo=UTC))
    overrides = {} if zone is None else {"display_timezone": zone}
    app = await start_app(make_settings(**overrides), clock=clock)
    await signed_up_and_verified(app, "zone@example.com")
    await post_form(app.client, "/", {"email": "zone@example.com", "password": STRONG_PASSWORD})

    account = await app.client.get("/account")

    assert f"Signed in Dec 5, 2026, {shown}" in account.text


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", ""])
def test_display_timezone_must_be_a_time_zone_name(zone: str) -> None:
    with pytest.raises(ValidationError, match="display_timezone"):
        Settings(_env_file=None, development_mode=True, display_timezone=zone)


# --- the account's language -------------------------------------------------------------------


async def test_sign_up_keeps_the_pages_language_for_the_accounts_mail(dev_app: RunningApp) -> None:
    dev_app.client.headers["accept-language"] = "fr-CA,fr;q=0.9"
    await sign_up(dev_app, "langue@example.com")
    await dev_app.requested_codes_issued()
    dev_app.client.headers["accept-language"] = "en"
    # A reset asked from an English page is mailed in English (that request's language);
    # the account keeps French.
    await post_form(dev_app.client, "/forgot", {"email": "langue@example.com"})
    await dev_app.requested_codes_issued()

    subjects = [row.subject for row in await dev_app.outbox()]
    async with make_sessionmaker(dev_app.app.state.engine)() as session:
        stored = (await session.execute(select(User.locale))).scalars().all()

    assert subjects == [
        "Votre code de vérification de courriel TaxEase",
        "Your TaxEase password reset code",
    ]
    assert stored == ["fr-CA"]
