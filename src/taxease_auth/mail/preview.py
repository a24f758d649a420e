"""Mail previews for review: one mail kind in one locale, written to files as it would be sent.

For a translator or a reviewer (``taxease-auth preview-mail``): nothing is queued or sent, no
database or credentials are needed, and the code shown is a sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taxease_auth.mail.render import MailRenderer
from taxease_auth.store.models import MailKind

SAMPLE_CODE = "042917"
SAMPLE_FIRST_NAME = "Zoë"
# A code mail carries its link (DESIGN.md §12) where PUBLIC_BASE_URL (or development mode) gives
# one: the preview shows where it goes and what it says.
SAMPLE_LINK = "http://127.0.0.1:8001/c/SAMPLE-link-token-123"


@dataclass(frozen=True)
class Preview:
    """The files written and the subject they go with."""

    subject: str
    html: Path
    text: Path


def write_preview(
    kind: MailKind,
    locale: str,
    out_dir: Path,
    *,
    app_name: str,
    expires_minutes: int,
    first_name: str | None = SAMPLE_FIRST_NAME,
) -> Preview:
    """Render ``kind`` in supported ``locale`` and write ``<kind>.<locale>.html`` and
    ``.txt`` (the subject as the text's first line, as a mail reader shows it) to ``out_dir``,
    created if missing. Raises ``ValueError`` for an unsupported locale."""
    renderer = MailRenderer(app_name, default_locale=locale)
    mail = renderer.render(
        kind,
        code=SAMPLE_CODE,
        first_name=first_name,
        expires_minutes=expires_minutes,
        link=SAMPLE_LINK,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / f"{kind.value}.{locale}.html"
    text = out_dir / f"{kind.value}.{locale}.txt"
    html.write_text(mail.html, encoding="utf-8")
    text.write_text(f"Subject: {mail.subject}\n\n{mail.text}", encoding="utf-8")
    return Preview(subject=mail.subject, html=html, text=text)
