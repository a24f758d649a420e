"""Mail backends: pick one from the settings."""

from __future__ import annotations

from taxease_auth.config import ConfigError, EmailBackendName, Settings
from taxease_auth.mail.backends.base import MailBackend


def build_backend(settings: Settings) -> MailBackend:
    if settings.mail_backend is EmailBackendName.CONSOLE:
        from taxease_auth.mail.backends.console import ConsoleBackend

        return ConsoleBackend()
    if settings.mail_backend is EmailBackendName.SES:
        from taxease_auth.mail.backends.ses import SesBackend

        return SesBackend(settings)
    if settings.mail_backend is EmailBackendName.SMTP:
        from taxease_auth.mail.backends.smtp import SmtpBackend

        return SmtpBackend(settings)
    raise ConfigError(f"unknown EMAIL_BACKEND {settings.mail_backend!r}")
