"""The development mailbox: ``/dev/mailbox`` lists what the console backend "sent", newest
first, and ``/dev/mailbox/{number}`` shows one mail as its recipient would see it.

Development mode only: ``create_app`` includes this router only then, and every handler checks
again (a 404, as for any unknown path), so no configuration mistake can publish codes. The pages
are left out of the OpenAPI document: they are a developer's tool, not the API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from jinja2 import DictLoader, Environment, StrictUndefined

from taxease_auth.config import Settings
from taxease_auth.mail.backends.console import ConsoleBackend, KeptMail

router = APIRouter(prefix="/dev", include_in_schema=False)

# The mail's HTML is shown in an <iframe sandbox srcdoc>: no scripts, no forms, a unique origin.
# The policy below also applies inside it (srcdoc documents inherit it): only inline styles,
# as mail uses, and data: images.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    # The pages hold live codes: never cached, never sent on as a referrer.
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_LAYOUT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %} - {{ app_name }} development mailbox</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem;
       color: #111827; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #e5e7eb; }
th { background: #f3f4f6; }
.note { color: #6b7280; }
iframe { width: 100%; height: 34rem; border: 1px solid #d1d5db; border-radius: 6px; }
pre { background: #f3f4f6; padding: 1rem; border-radius: 6px; white-space: pre-wrap; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { font-weight: bold; }
dd { margin: 0; }
</style>
</head>
<body>
{% block body %}{% endblock %}
</body>
</html>
"""

_LIST = """{% extends "layout.html" %}
{% block title %}Mailbox{% endblock %}
{% block body %}
<h1>Development mailbox</h1>
<p class="note">What the console backend "sent" (the last {{ keep }}), newest first. Mail is
kept in memory until the server stops. This page exists in development mode only.</p>
{% if mails %}
<table>
<thead><tr><th>#</th><th>Time (UTC)</th><th>To</th><th>Subject</th><th>Kind</th><th></th></tr>
</thead>
<tbody>
{% for mail in mails %}
<tr>
<td>{{ mail.kept.number }}</td>
<td><time datetime="{{ mail.kept.sent_at.isoformat() }}">{{
  mail.kept.sent_at.strftime("%Y-%m-%d %H:%M:%S") }}</time></td>
<td>{{ mail.kept.message.recipient }}</td>
<td>{{ mail.kept.message.subject }}</td>
<td>{{ mail.kept.message.kind }}</td>
<td><a href="{{ mail.link }}">Open</a></td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>No mail yet: register an account and its verification mail appears here.</p>
{% endif %}
{% endblock %}
"""

_MAIL = """{% extends "layout.html" %}
{% block title %}{{ kept.message.subject }}{% endblock %}
{% block body %}
<p><a href="{{ back }}">&larr; Mailbox</a></p>
<h1>{{ kept.message.subject }}</h1>
<dl>
<dt>From</dt><dd>{{ kept.message.sender }}</dd>
<dt>To</dt><dd>{{ kept.message.recipient }}</dd>
<dt>Time (UTC)</dt><dd><time datetime="{{ kept.sent_at.isoformat() }}">{{
  kept.sent_at.strftime("%Y-%m-%d %H:%M:%S") }}</time></dd>
<dt>Kind</dt><dd>{{ kept.message.kind }}</dd>
</dl>
<h2>HTML version</h2>
<iframe sandbox title="The HTML version of the mail" srcdoc="{{ kept.message.html }}"></iframe>
<h2>Text version</h2>
<pre>{{ kept.message.text }}</pre>
{% endblock %}
"""

# Autoescape everywhere: recipients, subjects and both bodies are data. In the srcdoc
# attribute, escaping "&<>\"'" is exactly what keeps the mail's HTML inside the attribute.
_PAGES = Environment(
    loader=DictLoader({"layout.html": _LAYOUT, "list.html": _LIST, "mail.html": _MAIL}),
    autoescape=True,
    undefined=StrictUndefined,
)


def _mailbox(request: Request) -> ConsoleBackend:
    """The console backend's memory, or 404 outside development mode or with another backend."""
    settings: Settings = request.app.state.settings
    backend = getattr(request.app.state, "mail_backend", None)
    if not settings.development_mode or not isinstance(backend, ConsoleBackend):
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND)
    return backend


Mailbox = Annotated[ConsoleBackend, Depends(_mailbox)]


def _page(template: str, request: Request, **context: object) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    html = _PAGES.get_template(template).render(app_name=settings.app_name, **context)
    return HTMLResponse(html, headers=_HEADERS)


@router.get("/mailbox", name="dev_mailbox")
async def mailbox(request: Request, mailbox: Mailbox) -> HTMLResponse:
    """Every kept mail, newest first, with a link to each."""
    mails = [
        {"kept": kept, "link": request.url_for("dev_mail", number=kept.number).path}
        for kept in mailbox.kept()
    ]
    return _page("list.html", request, mails=mails, keep=mailbox.keep)


@router.get("/mailbox/{number}", name="dev_mail")
async def mail(request: Request, mailbox: Mailbox, number: int) -> HTMLResponse:
    """One mail: its headers, the HTML version in a sandboxed frame, the text version."""
    kept: KeptMail | None = mailbox.find(number)
    if kept is None:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"No mail numbered {number}: the mailbox keeps the last {mailbox.keep}",
        )
    return _page("mail.html", request, kept=kept, back=request.url_for("dev_mailbox").path)
