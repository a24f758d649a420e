"""The development mailbox: what the console backend "sent", as a developer reads it in a
browser; and its absence in production mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx
import pytest

from taxease_auth.mail.message import Message
from taxease_auth.mail.render import MailRenderer
from taxease_auth.store.models import MailKind
from tests.api.conftest import register
from tests.conftest import RunningApp, SesInbox, SettingsFactory, StartApp, extract_code

HOSTILE_NAME = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
VOID_ELEMENTS = {"meta", "br", "hr", "img", "input", "link"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    text: str = ""


@dataclass
class Page(HTMLParser):
    """A strict reading of a page: every element opened is closed in order, and what a
    browser would build (elements with their attributes, and the text inside each) is kept."""

    elements: list[Element] = field(default_factory=list)
    _open: list[Element] = field(default_factory=list)
    doctype: str | None = None

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag not in VOID_ELEMENTS:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert self._open, f"</{tag}> closes nothing"
        assert self._open[-1].tag == tag, f"</{tag}> closes <{self._open[-1].tag}>"
        self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def all(self, tag: str) -> list[Element]:
        return [element for element in self.elements if element.tag == tag]

    def one(self, tag: str) -> Element:
        [element] = self.all(tag)
        return element


def parse(response: httpx.Response) -> Page:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = Page()
    page.feed(response.text)
    page.close()
    assert page.doctype is not None
    assert page.doctype.lower() == "doctype html"
    assert not page._open, f"unclosed: {[element.tag for element in page._open]}"
    return page


async def open_newest(client: httpx.AsyncClient) -> Page:
    listing = parse(await client.get("/dev/mailbox"))
    first_link = listing.all("a")[0].attrs["href"]
    assert first_link is not None
    return parse(await client.get(first_link))


async def test_lists_the_mails_newest_first(dev_app: RunningApp) -> None:
    for name in ("first", "second", "third"):
        assert (await register(dev_app.client, f"{name}@example.com")).status_code == 201
    await dev_app.console_mail("third@example.com")

    response = await dev_app.client.get("/dev/mailbox")
    page = parse(response)

    rows = [row for row in page.all("tr") if "@" in row.text]
    recipients = [row.text.split("@example.com")[0].split()[-1] for row in rows]
    assert recipients == ["third", "second", "first"]
    assert all("Your TaxEase email verification code" in row.text for row in rows)
    assert all("email_verification" in row.text for row in rows)
    assert len(page.all("time")) == 3
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_an_empty_mailbox_says_so(dev_app: RunningApp) -> None:
    page = parse(await dev_app.client.get("/dev/mailbox"))

    assert "No mail yet" in page.one("body").text
    assert page.all("table") == []


async def test_shows_a_mail_as_sent_with_its_code(dev_app: RunningApp) -> None:
    email = "reader@example.com"
    await register(dev_app.client, email)
    code = await dev_app.latest_code(email)
    [sent] = dev_app.console.recent() if dev_app.console else []

    page = await open_newest(dev_app.client)

    frame = page.one("iframe")
    # An empty sandbox attribute: no scripts, no forms, a unique origin for the mail.
    assert frame.attrs["sandbox"] in ("", None)
    # The attribute decodes back to exactly the HTML that was mailed.
    assert frame.attrs["srcdoc"] == sent.html
    assert extract_code(frame.attrs["srcdoc"] or "") == code
    text = page.one("pre").text
    assert text == sent.text
    assert code in text
    assert sent.subject in page.one("h1").text
    assert email in page.one("dl").text


async def test_a_hostile_first_name_stays_text(dev_app: RunningApp) -> None:
    # The API refuses such a name (auth/names.py); a mail that holds one anyway, as older rows
    # may, goes straight through the console backend so the page is still tested with it.
    refused = await register(dev_app.client, "hostile@example.com", first_name=HOSTILE_NAME)
    assert refused.status_code == 422
    assert dev_app.console is not None
    mail = MailRenderer("TaxEase").render(
        MailKind.EMAIL_VERIFICATION, code="123456", first_name=HOSTILE_NAME, expires_minutes=5
    )
    await dev_app.console.send(
        Message(
            sender="no-reply@taxease.example",
            recipient="hostile@example.com",
            subject=mail.subject,
            html=mail.html,
            text=mail.text,
            kind=MailKind.EMAIL_VERIFICATION,
            idempotency_key="hostile",
        )
    )
    [sent] = dev_app.console.recent()

    page = await open_newest(dev_app.client)

    # Nothing the name holds became an element of the page, in or out of the frame's markup.
    assert page.all("script") == []
    assert page.all("img") == []
    # The mail's HTML escaped it once (the template), the page once more (the attribute).
    srcdoc = page.one("iframe").attrs["srcdoc"] or ""
    assert srcdoc == sent.html
    assert "<script>" not in srcdoc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in srcdoc
    # The text version shows the name as the characters it is.
    assert HOSTILE_NAME in page.one("pre").text
    mail_page = await dev_app.client.get("/dev/mailbox/1")
    assert "<script>" not in mail_page.text
    assert "<img" not in mail_page.text


async def test_an_unknown_mail_number_is_404(dev_app: RunningApp) -> None:
    response = await dev_app.client.get("/dev/mailbox/42")

    assert response.status_code == 404
    assert "keeps the last" in response.json()["detail"]


async def test_the_mailbox_is_not_in_the_openapi_document(dev_app: RunningApp) -> None:
    document = (await dev_app.client.get("/openapi.json")).json()

    assert not any(path.startswith("/dev") for path in document["paths"])


@pytest.mark.parametrize("path", ["/dev/mailbox", "/dev/mailbox/1"])
async def test_absent_in_production_mode(
    start_app: StartApp, ses_settings: SettingsFactory, ses: SesInbox, path: str
) -> None:
    ses.verify_identity("no-reply@taxease.example")
    running = await start_app(ses_settings())
    assert (await register(running.client, "prod@example.com")).status_code == 201
    await ses.wait_for("prod@example.com")

    response = await running.client.get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_absent_in_development_mode_with_another_backend(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    running = await start_app(
        make_settings(
            email_backend="smtp",
            smtp_host="127.0.0.1",
            smtp_security="none",
            aws_ses_from_email="no-reply@taxease.example",
        )
    )

    response = await running.client.get("/dev/mailbox")

    assert response.status_code == 404
