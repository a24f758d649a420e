"""An account keeps its language (DESIGN.md §12): ``locale`` on register and request-otp,
``users.locale`` set at registration, every later mail in it, a request's explicit ``locale``
for that mail only, and the same answers for known and unknown addresses."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from taxease_auth.api.schemas import Locale
from taxease_auth.locales import SUPPORTED_LOCALES
from tests.api.conftest import (
    API,
    answer_headers,
    login,
    register,
    user_rows,
    verify,
    wait_for_mail,
)
from tests.conftest import STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp, extract_code

FRENCH_VERIFICATION = "Votre code de vérification de courriel TaxEase"
FRENCH_RESET = "Votre code de réinitialisation du mot de passe TaxEase"
FRENCH_CHANGED = "Le mot de passe de votre compte TaxEase a été modifié"
FRENCH_LOGIN = "Votre code de connexion TaxEase"
FRENCH_EXISTS = "Quelqu’un a tenté de créer un compte TaxEase avec votre courriel"


async def register_in(app: RunningApp, email: str, locale: str | None) -> str:
    body: dict[str, Any] = {
        "email": email,
        "password": STRONG_PASSWORD,
        "first_name": "Élise",
        "last_name": "Gagnon",
        "accept_terms": True,
    }
    if locale is not None:
        body["locale"] = locale
    answer = await app.client.post(f"{API}/register", json=body)
    assert answer.status_code == 201, answer.text
    registration_id: str = answer.json()["registration_id"]
    return registration_id


async def request_code(app: RunningApp, email: str, purpose: str, **extra: str) -> Any:
    answer = await app.client.post(
        f"{API}/request-otp", json={"email": email, "purpose": purpose, **extra}
    )
    assert answer.status_code == 202, answer.text
    return answer


async def test_register_keeps_the_locale_for_every_later_mail(dev_app: RunningApp) -> None:
    email = "elise@example.com"
    registration_id = await register_in(dev_app, email, "fr-CA")
    [first] = await wait_for_mail(dev_app, email, 1)
    assert first.subject == FRENCH_VERIFICATION
    assert [user.locale for user in await user_rows(dev_app)] == ["fr-CA"]

    # A resend without a locale: the account's language.
    await request_code(dev_app, email, "email_verification", registration_id=registration_id)
    mails = await wait_for_mail(dev_app, email, 2)
    assert mails[1].subject == FRENCH_VERIFICATION
    verified = await verify(
        dev_app.client, email, extract_code(mails[1].text), registration_id=registration_id
    )
    assert verified.status_code == 200

    # A reset code and the "password changed" notice after it: still French.
    assert (
        await dev_app.client.post(f"{API}/password-reset/request", json={"email": email})
    ).status_code == 202
    mails = await wait_for_mail(dev_app, email, 3)
    assert mails[2].subject == FRENCH_RESET
    confirmed = await dev_app.client.post(
        f"{API}/password-reset/confirm",
        json={
            "email": email,
            "code": extract_code(mails[2].text),
            "new_password": "another horse battery staple",
        },
    )
    assert confirmed.status_code == 200
    mails = await wait_for_mail(dev_app, email, 4)
    assert mails[3].subject == FRENCH_CHANGED


async def test_an_explicit_locale_on_request_otp_is_for_that_mail_only(
    dev_app: RunningApp,
) -> None:
    email = "once@example.com"
    registration_id = await register_in(dev_app, email, "fr-CA")
    await wait_for_mail(dev_app, email, 1)

    await request_code(
        dev_app, email, "email_verification", registration_id=registration_id, locale="en"
    )
    english = (await wait_for_mail(dev_app, email, 2))[1]
    await request_code(dev_app, email, "email_verification", registration_id=registration_id)
    french = (await wait_for_mail(dev_app, email, 3))[2]

    assert english.subject == "Your TaxEase email verification code"
    assert french.subject == FRENCH_VERIFICATION
    assert [user.locale for user in await user_rows(dev_app)] == ["fr-CA"]


async def test_login_code_and_account_exists_notice_in_the_accounts_language(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(login_otp_required=True))
    email = "owner@example.com"
    registration_id = await register_in(app, email, "fr-CA")
    code = extract_code((await wait_for_mail(app, email, 1))[0].text)
    assert (
        await verify(app.client, email, code, registration_id=registration_id)
    ).status_code == 200

    assert (await login(app.client, email, STRONG_PASSWORD)).status_code == 202
    login_mail = (await wait_for_mail(app, email, 2))[1]
    # Someone registers the address again, asking for English: the owner's notice is French.
    await register_in(app, email, "en")
    notice = (await wait_for_mail(app, email, 3))[2]

    assert login_mail.subject == FRENCH_LOGIN
    assert notice.subject == FRENCH_EXISTS


async def test_an_account_without_a_locale_gets_default_locale(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(default_locale="fr-CA"))
    await register_in(app, "plain@example.com", None)

    [mail] = await wait_for_mail(app, "plain@example.com", 1)

    assert mail.subject == FRENCH_VERIFICATION
    assert [user.locale for user in await user_rows(app)] == [None]


@pytest.mark.parametrize("locale", ["fr", "de", "FR-ca", "fr_CA", "", 7])
@pytest.mark.parametrize("route", ["register", "request-otp"])
async def test_an_unsupported_locale_is_refused_naming_the_field(
    dev_app: RunningApp, route: str, locale: object
) -> None:
    body: dict[str, Any] = {"email": "field@example.com", "purpose": "email_verification"}
    if route == "register":
        body = {
            "email": "field@example.com",
            "password": STRONG_PASSWORD,
            "first_name": "A",
            "last_name": "B",
            "accept_terms": True,
        }
    answer = await dev_app.client.post(f"{API}/{route}", json={**body, "locale": locale})

    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["detail"]] == [["body", "locale"]]


async def test_request_otp_with_a_locale_answers_the_same_for_known_and_unknown(
    dev_app: RunningApp,
) -> None:
    await register_in(dev_app, "known@example.com", "en")
    await wait_for_mail(dev_app, "known@example.com", 1)

    answers = []
    for email in ("known@example.com", "unknown@example.com"):
        for purpose in ("email_verification", "password_reset"):
            answer = await request_code(dev_app, email, purpose, locale="fr-CA")
            answers.append((email, answer.status_code, answer.json(), answer_headers(answer)))
    await dev_app.requested_codes_issued()

    assert answers[0][1:] == answers[2][1:]
    assert answers[1][1:] == answers[3][1:]


async def test_openapi_shows_the_locale_field(dev_app: RunningApp) -> None:
    schemas = (await dev_app.client.get("/openapi.json")).json()["components"]["schemas"]

    for name in ("RegisterRequest", "RequestOtpRequest"):
        field = schemas[name]["properties"]["locale"]
        options = [option.get("enum") for option in field["anyOf"] if "enum" in option]
        assert options == [["en", "fr-CA"]], field
        assert "locale" not in schemas[name].get("required", [])


def test_the_schemas_locales_are_the_supported_ones() -> None:
    assert list(get_args(Locale)) == list(SUPPORTED_LOCALES)


async def test_register_with_a_locale_then_the_guides_body_still_works(
    dev_app: RunningApp,
) -> None:
    answer = await register(dev_app.client, "guide@example.com")

    assert answer.status_code == 201
