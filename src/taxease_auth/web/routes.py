"""The page routes (DESIGN.md §12): sign in (``/``), ``/signup``, ``/verify``, ``/forgot``,
``/reset``, ``/account`` and the language switch. Thin like ``api/``: read the form, call the
service layer with the client address ``api/deps.caller`` gives the JSON API (the same rate
budgets, generic answers and audit events), render or redirect (POST/redirect/GET, 303).

Nothing a page says depends on whether an address has an account: sign-up and the password
reset always go on to the code page, and a failed sign-in has one text.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from taxease_auth.api.deps import caller
from taxease_auth.api.schemas import (
    LoginRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    RegisterRequest,
    VerifyOtpRequest,
)
from taxease_auth.auth.code_requests import accept_code_request
from taxease_auth.auth.login import LoginChallenge
from taxease_auth.auth.mail_link import LINK_PATH, is_well_formed
from taxease_auth.auth.registration import Registration
from taxease_auth.auth.service import CodeSubmission
from taxease_auth.auth.sessions import Authenticated, EndReason, Sessions
from taxease_auth.errors import (
    EmailNotVerified,
    InvalidCode,
    InvalidCredentials,
    InvalidToken,
    RateLimited,
    WeakPassword,
)
from taxease_auth.locales import SUPPORTED_LOCALES
from taxease_auth.store.models import Purpose
from taxease_auth.web.browser import Browser, PageSession
from taxease_auth.web.forms import clean_code, field_errors, read_form
from taxease_auth.web.headers import PAGE_PATHS
from taxease_auth.web.pages import Pages, Text
from taxease_auth.web.texts import (
    BAD_CODE,
    BAD_CREDENTIALS,
    FIELD_TEXTS,
    FORM_EXPIRED,
    NOTICES,
    RATE_LIMITED,
    password_refusal,
)

router = APIRouter(include_in_schema=False)

_FLOW_PURPOSES = {purpose.value for purpose in Purpose}


def _web(request: Request) -> tuple[Browser, Pages]:
    state = request.app.state
    browser: Browser = state.browser
    pages: Pages = state.pages
    return browser, pages


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _notice(request: Request) -> Text | None:
    key = request.query_params.get("done", "")
    return Text(NOTICES[key]) if key in NOTICES else None


def _errors(fields: set[str]) -> dict[str, Text]:
    """Field errors in the order the fields appear on pages (the first gets focus)."""
    return {name: Text(text) for name, text in FIELD_TEXTS.items() if name in fields}


def _validated(model: type[BaseModel], data: dict[str, Any]) -> tuple[Any, dict[str, Text]]:
    parsed, failed = field_errors(model, data)
    return parsed, _errors(failed)


def _rate_limited(error: RateLimited, field: str) -> dict[str, Text]:
    return {field: Text(RATE_LIMITED, {"seconds": error.retry_after})}


async def _checked_form(request: Request) -> dict[str, str] | None:
    """The form's fields, or None when its CSRF token is missing or not this browser's."""
    browser, _ = _web(request)
    form = await read_form(request)
    return form if browser.csrf_valid(request, form.get("csrf_token")) else None


def _form_expired(request: Request) -> Response:
    _, pages = _web(request)
    return pages.render(request, "expired.html", status_code=403, notice=Text(FORM_EXPIRED))


# --- sign in ----------------------------------------------------------------------------------


@router.get("/")
async def sign_in_page(request: Request) -> Response:
    _, pages = _web(request)
    return pages.render(request, "signin.html", notice=_notice(request))


@router.post("/")
async def sign_in(request: Request) -> Response:
    browser, pages = _web(request)
    form = await _checked_form(request)
    if form is None:
        return _form_expired(request)
    values = {"email": form.get("email", "")}
    parsed, errors = _validated(LoginRequest, form)
    if errors:
        return pages.render(request, "signin.html", status_code=422, errors=errors, values=values)
    service, client_ip = caller(request)
    try:
        result = await service.login(
            parsed.email,
            parsed.password,
            client_ip=client_ip,
            user_agent=request.headers.get("user-agent"),
        )
    except InvalidCredentials:
        errors = {"password": Text(BAD_CREDENTIALS)}
        return pages.render(request, "signin.html", status_code=401, errors=errors, values=values)
    except EmailNotVerified:
        # Said only after a correct password, as the API's 403: the code page, with a resend.
        response = _redirect("/verify?done=unverified")
        browser.set_flow(
            response, {"purpose": Purpose.EMAIL_VERIFICATION.value, "email": parsed.email}
        )
        return response
    except RateLimited as error:
        errors = _rate_limited(error, "email")
        return pages.render(request, "signin.html", status_code=429, errors=errors, values=values)
    if isinstance(result, LoginChallenge):
        response = _redirect("/verify")
        browser.set_flow(
            response,
            {
                "purpose": Purpose.LOGIN.value,
                "email": parsed.email,
                "challenge_id": result.challenge_id,
                "sent_at": time.time(),
            },
        )
        return response
    response = _redirect("/account")
    browser.clear_flow(response)
    browser.set_session(
        response,
        PageSession(
            _session_id(request, result.access_token), result.access_token, result.refresh_token
        ),
    )
    return response


def _session_id(request: Request, access_token: str) -> str | None:
    sessions: Sessions = request.app.state.sessions
    return sessions.tokens.decode(access_token).session_id


# --- sign up ----------------------------------------------------------------------------------


@router.get("/signup")
async def sign_up_page(request: Request) -> Response:
    _, pages = _web(request)
    return pages.render(request, "signup.html")


@router.post("/signup")
async def sign_up(request: Request) -> Response:
    browser, pages = _web(request)
    form = await _checked_form(request)
    if form is None:
        return _form_expired(request)
    values = {name: form.get(name, "") for name in ("email", "first_name", "last_name")}
    data: dict[str, Any] = {**form, "accept_terms": form.get("accept_terms") == "yes"}
    parsed, errors = _validated(RegisterRequest, data)
    if errors:
        return pages.render(request, "signup.html", status_code=422, errors=errors, values=values)
    service, client_ip = caller(request)
    try:
        registration_id = await service.register(
            Registration(
                email=parsed.email,
                password=parsed.password,
                first_name=parsed.first_name,
                last_name=parsed.last_name,
                locale=pages.locale(request),  # the account's mail in the page's language
            ),
            client_ip=client_ip,
        )
    except WeakPassword as error:
        errors = {"password": password_refusal(error)}
        return pages.render(request, "signup.html", status_code=422, errors=errors, values=values)
    except RateLimited as error:
        errors = _rate_limited(error, "email")
        return pages.render(request, "signup.html", status_code=429, errors=errors, values=values)
    response = _redirect("/verify")
    browser.set_flow(
        response,
        {
            "purpose": Purpose.EMAIL_VERIFICATION.value,
            "email": parsed.email,
            # The code and the password of *this* registration (DESIGN.md §11).
            "registration_id": registration_id,
            "sent_at": time.time(),
        },
    )
    return response


# --- the code ---------------------------------------------------------------------------------


def _cooldown_left(request: Request, flow: dict[str, Any]) -> int:
    """Seconds until the resend button may be used (the cooldown since the last code)."""
    cooldown = request.app.state.settings.otp_resend_cooldown_seconds
    sent_at = flow.get("sent_at")
    if not isinstance(sent_at, int | float):
        return 0
    return max(0, int(sent_at + cooldown - time.time() + 0.999))


def _verify_flow(request: Request) -> dict[str, Any] | None:
    browser, _ = _web(request)
    flow = browser.flow(request)
    if flow.get("purpose") not in _FLOW_PURPOSES or flow.get("purpose") == "password_reset":
        return None
    return flow if isinstance(flow.get("email"), str) else None


def _render_code_page(
    request: Request, template: str, flow: dict[str, Any], status_code: int, **context: Any
) -> Response:
    """A page that takes a mailed code (verify, reset): the address, the code's length and
    the resend cooldown, with the flow's notice unless the caller gives one."""
    _, pages = _web(request)
    settings = request.app.state.settings
    context.setdefault("notice", _notice(request))
    # The code a mail link carried (link_routes.py): filled in, the new password to type.
    context.setdefault("values", {"code": flow.get("code") or ""})
    return pages.render(
        request,
        template,
        status_code=status_code,
        email=flow["email"],
        cooldown=settings.otp_resend_cooldown_seconds,
        code_length=settings.otp_length,
        cooldown_left=_cooldown_left(request, flow),
        **context,
    )


def _render_verify(
    request: Request, flow: dict[str, Any], status_code: int = 200, **context: Any
) -> Response:
    login = flow["purpose"] == Purpose.LOGIN.value
    return _render_code_page(request, "verify.html", flow, status_code, login=login, **context)


@router.get("/verify")
async def verify_page(request: Request) -> Response:
    flow = _verify_flow(request)
    if flow is None:
        return _redirect("/")
    return _render_verify(request, flow)


async def _resend(request: Request, flow: dict[str, Any], back: str, field: str) -> Response:
    browser, pages = _web(request)
    service, client_ip = caller(request)
    try:
        await accept_code_request(
            service,
            flow["email"],
            Purpose(flow["purpose"]),
            client_ip,
            challenge_id=flow.get("challenge_id"),
            registration_id=flow.get("registration_id"),
            locale=pages.locale(request),
        )
    except RateLimited as error:
        errors = _rate_limited(error, field)
        if back == "/verify":
            return _render_verify(request, flow, status_code=429, errors=errors, notice=None)
        return _render_reset(request, flow, status_code=429, errors=errors, notice=None)
    response = _redirect(f"{back}?done=sent")
    browser.set_flow(response, {**flow, "sent_at": time.time()})
    return response


@router.post("/verify")
async def verify(request: Request) -> Response:
    browser, _ = _web(request)
    form = await _checked_form(request)
    if form is None:
        return _form_expired(request)
    flow = _verify_flow(request)
    if flow is None:
        return _redirect("/")
    if form.get("action") == "resend":
        return await _resend(request, flow, "/verify", "code")
    purpose = Purpose(flow["purpose"])
    data = {
        "email": flow["email"],
        "code": clean_code(form.get("code", "")),
        "purpose": purpose.value,
        "challenge_id": flow.get("challenge_id"),
    }
    parsed, errors = _validated(VerifyOtpRequest, data)
    if errors:
        return _render_verify(request, flow, status_code=422, errors=errors, notice=None)
    service, client_ip = caller(request)
    try:
        tokens = await service.verify_code(
            CodeSubmission(
                parsed.email,
                parsed.code,
                purpose,
                client_ip,
                parsed.challenge_id,
                user_agent=request.headers.get("user-agent"),
                registration_id=flow.get("registration_id"),
            )
        )
    except InvalidCode:
        errors = {"code": Text(BAD_CODE)}
        return _render_verify(request, flow, status_code=400, errors=errors, notice=None)
    except RateLimited as error:
        return _render_verify(
            request, flow, status_code=429, errors=_rate_limited(error, "code"), notice=None
        )
    if tokens is None:
        response = _redirect("/?done=verified")
    else:
        response = _redirect("/account")
        browser.set_session(
            response,
            PageSession(
                _session_id(request, tokens.access_token),
                tokens.access_token,
                tokens.refresh_token,
            ),
        )
    browser.clear_flow(response)
    return response


# --- forgotten password -----------------------------------------------------------------------


@router.get("/forgot")
async def forgot_page(request: Request) -> Response:
    _, pages = _web(request)
    return pages.render(request, "forgot.html")


@router.post("/forgot")
async def forgot(request: Request) -> Response:
    browser, pages = _web(request)
    form = await _checked_form(request)
    if form is None:
        return _form_expired(request)
    values = {"email": form.get("email", "")}
    parsed, errors = _validated(PasswordResetRequest, form)
    if errors:
        return pages.render(request, "forgot.html", status_code=422, errors=errors, values=values)
    service, client_ip = caller(request)
    try:
        await accept_code_request(
            service, parsed.email, Purpose.PASSWORD_RESET, client_ip, locale=pages.locale(request)
        )
    except RateLimited as error:
        errors = _rate_limited(error, "email")
        return pages.render(request, "forgot.html", status_code=429, errors=errors, values=values)
    # The same next page whether or not the address has an account.
    response = _redirect("/reset")
    browser.set_flow(
        response,
        {"purpose": Purpose.PASSWORD_RESET.value, "email": parsed.email, "sent_at": time.time()},
    )
    return response


def _reset_flow(request: Request) -> dict[str, Any] | None:
    browser, _ = _web(request)
    flow = browser.flow(request)
    if flow.get("purpose") != Purpose.PASSWORD_RESET.value or not isinstance(
        flow.get("email"), str
    ):
        return None
    return flow


def _render_reset(
    request: Request, flow: dict[str, Any], status_code: int = 200, **context: Any
) -> Response:
    return _render_code_page(request, "reset.html", flow, status_code, **context)


@router.get("/reset")
async def reset_page(request: Request) -> Response:
    flow = _reset_flow(request)
    if flow is None:
        return _redirect("/forgot")
    return _render_reset(request, flow)


@router.post("/reset")
async def reset(request: Request) -> Response:
    browser, _ = _web(request)
    form = await _checked_form(request)
    if form is None:
        return _form_expired(request)
    flow = _reset_flow(request)
    if flow is None:
        return _redirect("/forgot")
    if form.get("action") == "resend":
        return await _resend(request, flow, "/reset", "code")
    data = {
        "email": flow["email"],
        "code": clean_code(form.get("code", "")),
        "new_password": form.get("new_password", ""),
    }
    parsed, errors = _validated(PasswordResetConfirm, data)
    if errors:
        return _render_reset(request, flow, status_code=422, errors=errors, notice=None)
    service, client_ip = caller(request)
    try:
        await service.confirm_password_reset(
            parsed.email, parsed.code, parsed.new_password, client_ip=client_ip
        )
    except InvalidCode:
        return _render_reset(
            request, flow, status_code=400, errors={"code": Text(BAD_CODE)}, notice=None
        )
    except WeakPassword as error:
        errors = {"new_password": password_refusal(error)}
        return _render_reset(request, flow, status_code=422, errors=errors, notice=None)
    except RateLimited as error:
        return _render_reset(
            request, flow, status_code=429, errors=_rate_limited(error, "code"), notice=None
        )
    response = _redirect("/?done=reset")
    browser.clear_flow(response)
    browser.clear_session(response)  # the reset ended every session, this browser's too
    return response


# --- the account ------------------------------------------------------------------------------


async def _signed_in(request: Request, response: Response | None = None) -> Authenticated | None:
    """The browser's account, or None. An expired access token is refreshed with the cookie's
    refresh token (rotated: the new pair is sealed into the cookie of ``response``)."""
    browser, _ = _web(request)
    page_session = browser.session(request)
    if page_session is None:
        return None
    sessions: Sessions = request.app.state.sessions
    try:
        return await sessions.authenticate(page_session.access_token)
    except InvalidToken:
        pass
    _, client_ip = caller(request)
    try:
        pair = await sessions.refresh(page_session.refresh_token, client_ip=client_ip)
        caller_now = await sessions.authenticate(pair.access_token)
    except InvalidToken:
        return None
    request.state.refreshed_session = PageSession(
        caller_now.session_id, pair.access_token, pair.refresh_token
    )
    return caller_now


def _keep_refreshed(request: Request, response: Response) -> Response:
    browser, _ = _web(request)
    refreshed = getattr(request.state, "refreshed_session", None)
    if refreshed is not None:
        browser.set_session(response, refreshed)
    return response


def _signed_out(request: Request, notice: str) -> Response:
    browser, _ = _web(request)
    response = _redirect(f"/?done={notice}")
    browser.clear_session(response)
    return response


@router.get("/account")
async def account_page(request: Request) -> Response:
    _, pages = _web(request)
    try:
        account = await _signed_in(request)
    except RateLimited as error:
        return pages.render(
            request, "signin.html", status_code=429, errors=_rate_limited(error, "email")
        )
    if account is None:
        return (
            _signed_out(request, "expired") if _web(request)[0].session(request) else _redirect("/")
        )
    sessions: Sessions = request.app.state.sessions
    live = await sessions.live(account)
    response = pages.render(
        request,
        "account.html",
        user=account.user,
        sessions=live,
        current_session=account.session_id,
        notice=_notice(request),
    )
    return _keep_refreshed(request, response)


@router.post("/account")
async def account_action(request: Request) -> Response:
    form = await _checked_form(request)
    if form is None:
        return _form_expired(request)
    try:
        account = await _signed_in(request)
    except RateLimited:
        return _redirect("/account")
    if account is None:
        return _signed_out(request, "expired")
    sessions: Sessions = request.app.state.sessions
    action = form.get("action")
    if action == "sign_out_everywhere":
        await sessions.end_all(account)
        return _signed_out(request, "signed_out")
    if action == "sign_out" and account.session_id is not None:
        await sessions.end(account, account.session_id, EndReason.LOGOUT)
        return _signed_out(request, "signed_out")
    if action == "end_session":
        target = form.get("session_id", "")
        await sessions.end(account, target, EndReason.REVOKED)  # another account's: nothing
        if target == account.session_id:
            return _signed_out(request, "signed_out")
    return _keep_refreshed(request, _redirect("/account"))


# --- language ---------------------------------------------------------------------------------


@router.post("/language")
async def choose_language(request: Request) -> Response:
    browser, _ = _web(request)
    form = await _checked_form(request)
    if form is None:
        return _form_expired(request)
    back = form.get("next", "/")
    # Only our own pages (a mail link's among them): never an open redirect.
    own_page = (back in PAGE_PATHS and back != "/language") or (
        back.startswith(LINK_PATH) and is_well_formed(back.removeprefix(LINK_PATH))
    )
    response = _redirect(back if own_page else "/")
    if form.get("locale") in SUPPORTED_LOCALES:
        browser.set_locale(response, form["locale"])
    return response
