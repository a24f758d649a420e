"""The mail link's page, ``/c/{token}`` (DESIGN.md §12): the link that scanners cannot burn.

GET shows the code the link carries and one button, and changes nothing: no attempt counted,
no budget spent, the link still usable (mail scanners and the prefetchers of mail clients
follow every link). POST, with its CSRF token, spends the code through the service exactly as
the code pages and verify-otp do (same budgets, audit events, generic failures): a
verification code verifies the address (then the sign-in page), a login code signs this
browser in, a reset code leads to the new-password page with the code filled in (the link then
ends: a reset code is spent with the new password). An unknown, malformed, used, retired or
expired token gets the one page of a wrong code.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from taxease_auth.api.deps import caller
from taxease_auth.auth.mail_link import FollowedLink, MailLinks
from taxease_auth.auth.service import CodeSubmission
from taxease_auth.errors import InvalidCode, RateLimited
from taxease_auth.store.models import Purpose
from taxease_auth.web.browser import Browser, PageSession
from taxease_auth.web.forms import read_form
from taxease_auth.web.pages import Pages, Text
from taxease_auth.web.texts import BAD_CODE, FORM_EXPIRED, RATE_LIMITED

router = APIRouter(include_in_schema=False)


def _parts(request: Request) -> tuple[Browser, Pages, MailLinks]:
    state = request.app.state
    return state.browser, state.pages, state.mail_links


def _dead_link(request: Request) -> Response:
    """The page of a wrong code: one answer for every token that leads nowhere."""
    _, pages, _ = _parts(request)
    return pages.render(request, "link.html", status_code=400, link=None, notice=Text(BAD_CODE))


@router.get("/c/{token}")
async def link_page(request: Request, token: str) -> Response:
    _, pages, links = _parts(request)
    link = await links.find(token)
    if link is None:
        return _dead_link(request)
    return pages.render(request, "link.html", link=link, purpose=link.row.purpose)


@router.post("/c/{token}")
async def follow_link(request: Request, token: str) -> Response:
    browser, pages, links = _parts(request)
    form = await read_form(request)
    if not browser.csrf_valid(request, form.get("csrf_token")):
        return pages.render(request, "expired.html", status_code=403, notice=Text(FORM_EXPIRED))
    link = await links.find(token)
    if link is None:
        return _dead_link(request)
    row = link.row
    purpose = Purpose(row.purpose)
    # A registration's id proves the registrant (its password is activated, DESIGN.md §11)
    # only from the browser that signed up: its flow names the registration. Any other browser
    # submits the code as verify-otp without the id does, which checks the address's newest
    # code: the link of an older registration then leads nowhere (nothing is counted).
    registration_id = row.registration_id
    if registration_id is not None and browser.flow(request).get("registration_id") != (
        registration_id
    ):
        registration_id = None
        if not await links.is_newest(link):
            return _dead_link(request)
    service, client_ip = caller(request)
    try:
        tokens = await service.verify_code(
            CodeSubmission(
                row.email,
                link.code,
                purpose,
                client_ip,
                row.challenge_id,
                user_agent=request.headers.get("user-agent"),
                registration_id=registration_id,
            )
        )
    except InvalidCode:
        return _dead_link(request)
    except RateLimited as error:
        # As the code pages say it: the link stays usable once the budget allows.
        return pages.render(
            request,
            "link.html",
            status_code=429,
            link=link,
            purpose=row.purpose,
            notice=Text(RATE_LIMITED, {"seconds": error.retry_after}),
        )
    if purpose is Purpose.PASSWORD_RESET:
        return await _to_new_password(request, links, link)
    if tokens is None:
        response = RedirectResponse("/?done=verified", status_code=303)
    else:
        response = RedirectResponse("/account", status_code=303)
        sessions = request.app.state.sessions
        browser.set_session(
            response,
            PageSession(
                sessions.tokens.decode(tokens.access_token).session_id,
                tokens.access_token,
                tokens.refresh_token,
            ),
        )
    browser.clear_flow(response)
    return response


async def _to_new_password(request: Request, links: MailLinks, link: FollowedLink) -> Response:
    """A checked reset code: the link ends (one use), the reset page takes the new password
    with the code filled in (it is spent there, as the API's confirm spends it)."""
    browser, _, _ = _parts(request)
    if not await links.end(link):  # another request followed it first
        return _dead_link(request)
    response = RedirectResponse("/reset", status_code=303)
    browser.set_flow(
        response,
        {
            "purpose": Purpose.PASSWORD_RESET.value,
            "email": link.row.email,
            "code": link.code,
            "sent_at": time.time(),
        },
    )
    return response
