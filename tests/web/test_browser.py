"""The pages in a real Chromium against a real ``taxease-auth serve`` (DESIGN.md §12): the
whole path — sign up, the code read from the mail the server printed, sign in, sign out,
forgotten password, new password, sign out everywhere — in both languages, with JavaScript on
and off. With JavaScript on, every page (and its error state) is also checked with axe-core
at WCAG 2.2 AA, for a horizontal scroll at 320 px, and photographed at 1280 and 360 px into
tests/artifacts/ (not committed) for a person to look at.

Browser tests are about the pages, not the database: they run in the SQLite run only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import STRONG_PASSWORD, extract_code
from tests.support.cli import Running, mails_printed
from tests.web.conftest import ARTIFACTS

pytestmark = pytest.mark.sqlite_only

AXE_SCRIPT = (Path(__file__).resolve().parents[1] / "support" / "axe" / "axe.min.js").read_text()
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
# Every evaluate gets a deadline of its own: a page whose timers never fire would hang axe.
AXE_RUN = """async (tags) => {
  const deadline = new Promise((_, reject) =>
    setTimeout(() => reject(new Error("axe did not finish in 20 s")), 20000));
  const result = await Promise.race([
    axe.run(document, {runOnly: {type: "tag", values: tags}}), deadline]);
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => n.target.join(" "))}));
}"""
MAIL_WAIT_SECONDS = 20.0
LINK = re.compile(r"http://127\.0\.0\.1:[0-9]+/c/[A-Za-z0-9_-]{22}")
LOCALES = ["en", "fr-CA"]
# A heading of each page, per language: the page really is in that language.
HEADINGS = {
    "en": {"signup": "Create an account", "verify": "Confirm your email address"},
    "fr-CA": {"signup": "Créer un compte", "verify": "Confirmez votre adresse courriel"},
}


def codes_mailed_to(running: Running, recipient: str) -> list[str]:
    """The codes of every mail the server printed for ``recipient``, in order (notices carry
    no code and are left out)."""
    codes = []
    for mail in mails_printed(running.stdout):
        if f"\nTo: {recipient}\n" in mail:
            try:
                codes.append(extract_code(mail))
            except AssertionError:
                continue
    return codes


def wait_for_code(running: Running, recipient: str, number: int) -> str:
    """The ``number``-th code mailed to ``recipient`` (1 = the first), once it is printed."""
    deadline = time.monotonic() + MAIL_WAIT_SECONDS
    while time.monotonic() < deadline:
        codes = codes_mailed_to(running, recipient)
        if len(codes) >= number:
            return codes[number - 1]
        time.sleep(0.05)
    raise AssertionError(f"no code {number} for {recipient}: {running.output()}")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    page.evaluate(AXE_SCRIPT)
    violations: list[dict[str, Any]] = page.evaluate(AXE_RUN, AXE_TAGS)
    return violations


def check_page(page: Page, name: str, locale: str) -> None:
    """Screenshots at 1280 and 360 px; no horizontal scroll at 320 px (WCAG reflow: 320 CSS
    px is also what 1280 px at 400 % zoom gives, so 200 % is covered); no axe violation."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (1280, 360):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{locale}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 320, "height": 640})
    assert page.evaluate("document.documentElement.scrollWidth") <= 320, name
    page.set_viewport_size({"width": 1280, "height": 900})
    assert axe_violations(page) == [], name


def submit(page: Page, form: str) -> None:
    """Press the main button of the form posting to ``form`` and wait for the next page."""
    with page.expect_navigation():
        page.locator(f"main form[action='{form}'] button.primary").click()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    contexts = []

    def make(**options: Any) -> Page:
        context = browser.new_context(**options)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
@pytest.mark.parametrize("locale", LOCALES)
def test_the_whole_path_in_a_browser(
    new_page: Callable[..., Page], web_server: Running, locale: str, javascript: bool
) -> None:
    page = new_page(locale=locale, java_script_enabled=javascript)

    def check(name: str) -> None:
        if javascript:  # axe needs script (its timers never fire without it)
            check_page(page, name, locale)

    base = web_server.base_url
    email = f"{locale.lower()}-{'js' if javascript else 'nojs'}@example.com"

    # Sign up; a first empty try shows the errors tied to their fields, focus on the first.
    page.goto(f"{base}/signup")
    assert page.locator("html").get_attribute("lang") == locale
    assert page.locator("h1").inner_text() == HEADINGS[locale]["signup"]
    check("signup")
    submit(page, "/signup")
    assert page.locator("#email").get_attribute("aria-invalid") == "true"
    assert page.locator("#email").get_attribute("autofocus") is not None
    assert "email-error" in (page.locator("#email").get_attribute("aria-describedby") or "")
    if javascript:
        assert page.evaluate("document.activeElement.id") == "email"
    check("signup-errors")
    page.fill("#email", email)
    page.fill("#first_name", "Élise")
    page.fill("#last_name", "Gagnon-Tremblay")
    page.fill("#password", STRONG_PASSWORD)
    page.check("#accept_terms")
    submit(page, "/signup")

    # The code, pasted with a space in the middle.
    assert page.url == f"{base}/verify"
    assert page.locator("h1").inner_text() == HEADINGS[locale]["verify"]
    check("verify")
    code = wait_for_code(web_server, email, 1)
    page.fill("#code", f"{code[:3]} {code[3:]}")
    submit(page, "/verify")
    assert page.url == f"{base}/?done=verified"
    check("signin")

    # Sign in, see the account, sign this browser out.
    page.fill("#email", email)
    page.fill("#password", STRONG_PASSWORD)
    submit(page, "/")
    assert page.url == f"{base}/account"
    assert "Élise Gagnon-Tremblay" in page.locator("main").inner_text()
    check("account")
    with page.expect_navigation():
        page.locator("form:has(input[value='end_session']) button").first.click()
    assert page.url == f"{base}/?done=signed_out"
    page.goto(f"{base}/account")
    assert page.url == f"{base}/"

    # Forgotten password: the code (with a dash) and the new password on one page.
    page.goto(f"{base}/forgot")
    check("forgot")
    page.fill("#email", email)
    submit(page, "/forgot")
    assert page.url == f"{base}/reset"
    check("reset")
    reset_code = wait_for_code(web_server, email, 2)
    new_password = "another horse battery staple"
    page.fill("#code", f"{reset_code[:3]}-{reset_code[3:]}")
    page.fill("#new_password", new_password)
    submit(page, "/reset")
    assert page.url == f"{base}/?done=reset"

    # The new password works; sign out everywhere.
    page.fill("#email", email)
    page.fill("#password", new_password)
    submit(page, "/")
    assert page.url == f"{base}/account"
    with page.expect_navigation():
        page.locator("form:has(input[value='sign_out_everywhere']) button").click()
    assert page.url == f"{base}/?done=signed_out"


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_the_language_switch_works_without_script(
    new_page: Callable[..., Page], web_server: Running, javascript: bool
) -> None:
    page = new_page(locale="en", java_script_enabled=javascript)
    page.goto(f"{web_server.base_url}/forgot")

    with page.expect_navigation():
        page.locator("form.language button[value='fr-CA']").click()

    assert page.url == f"{web_server.base_url}/forgot"
    assert page.locator("html").get_attribute("lang") == "fr-CA"
    assert page.locator("h1").inner_text() == "Réinitialiser votre mot de passe"


@pytest.mark.parametrize("locale", LOCALES)
def test_error_states_pass_axe(
    new_page: Callable[..., Page], web_server: Running, locale: str
) -> None:
    page = new_page(locale=locale)
    page.goto(f"{web_server.base_url}/")
    page.fill("#email", "nobody@example.com")
    page.fill("#password", "not the password")
    submit(page, "/")

    assert page.evaluate("document.activeElement.id") == "password"
    check_page(page, "signin-errors", locale)


def link_mailed_to(running: Running, recipient: str, number: int) -> str:
    """The mail link (DESIGN.md §12) of the ``number``-th code mailed to ``recipient``."""
    wait_for_code(running, recipient, number)
    mails = [mail for mail in mails_printed(running.stdout) if f"\nTo: {recipient}\n" in mail]
    links = [LINK.search(mail) for mail in mails]
    found = [match.group(0) for match in links if match is not None]
    return found[number - 1]


@pytest.mark.parametrize("locale", LOCALES)
def test_a_mail_link_opened_in_chromium_spends_nothing_until_the_button(
    new_page: Callable[..., Page], web_server: Running, locale: str
) -> None:
    base = web_server.base_url
    email = f"link-{locale.lower()}@example.com"
    page = new_page(locale=locale)
    page.goto(f"{base}/signup")
    page.fill("#email", email)
    page.fill("#first_name", "Léa")
    page.fill("#last_name", "Roy")
    page.fill("#password", STRONG_PASSWORD)
    page.check("#accept_terms")
    submit(page, "/signup")
    link = link_mailed_to(web_server, email, 1)
    assert link.startswith(f"{base}/c/")

    # A mail scanner's browser opens the link, with script on, and leaves: nothing is spent.
    scanner = new_page(locale=locale)
    scanner.goto(link)
    code = scanner.locator(".code-shown").inner_text()
    assert code == wait_for_code(web_server, email, 1)
    check_page(scanner, "link", locale)
    scanner.goto(link)
    assert scanner.locator(".code-shown").inner_text() == code

    # The person opens it on another device and presses the one button.
    person = new_page(locale=locale)
    person.goto(link)
    with person.expect_navigation():
        person.locator(f"main form[action='/c/{link.rsplit('/', 1)[1]}'] button.primary").click()
    assert person.url == f"{base}/?done=verified"

    # The link is spent: the same page as a wrong code.
    person.goto(link)
    assert person.locator(".code-shown").count() == 0
    assert person.locator("p.notice").count() == 1
