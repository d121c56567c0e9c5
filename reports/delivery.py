"""E-mail delivery of the weekly summary (stdlib `smtplib`), where SMTP is set.

Set by the environment of `kalkan-server run`:

    KALKAN_SMTP_HOST, KALKAN_SMTP_PORT (default 25), KALKAN_SMTP_FROM,
    KALKAN_REPORT_TO (comma-separated addresses: the director, the responsible person),
    KALKAN_SMTP_STARTTLS=1, KALKAN_SMTP_USER / KALKAN_SMTP_PASSWORD (optional)

No SMTP host: nothing is sent (the summary is still made, kept and shown on login).
"""

from __future__ import annotations

import os
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SmtpConfig | None:
        env = os.environ if env is None else env
        host = env.get("KALKAN_SMTP_HOST", "").strip()
        recipients = tuple(a.strip() for a in env.get("KALKAN_REPORT_TO", "").split(",") if a.strip())
        if not host or not recipients:
            return None
        return cls(
            host=host,
            port=int(env.get("KALKAN_SMTP_PORT", "25")),
            sender=env.get("KALKAN_SMTP_FROM", "kalkan@localhost"),
            recipients=recipients,
            starttls=env.get("KALKAN_SMTP_STARTTLS", "") in ("1", "true", "yes"),
            username=env.get("KALKAN_SMTP_USER") or None,
            password=env.get("KALKAN_SMTP_PASSWORD") or None,
        )


def build_message(config: SmtpConfig, *, subject: str, body: str, pdf: bytes, filename: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = config.sender
    message["To"] = ", ".join(config.recipients)
    message.set_content(body)
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
    return message


def send(config: SmtpConfig, message: EmailMessage, *, timeout: float = 30.0) -> None:
    with smtplib.SMTP(config.host, config.port, timeout=timeout) as smtp:
        if config.starttls:
            smtp.starttls()
        if config.username:
            smtp.login(config.username, config.password or "")
        smtp.send_message(message)
