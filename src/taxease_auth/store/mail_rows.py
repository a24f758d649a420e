"""The mail an outbox row holds: the rendered content, as the store keeps it.

It lives in ``store/`` (not ``mail/``) because rows are written here: ``store/`` imports
nothing from ``mail/`` or ``auth/`` (DESIGN.md, "Where the new parts live").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RenderedMail:
    """A mail rendered from its templates, before it is addressed and queued."""

    subject: str
    html: str
    text: str
