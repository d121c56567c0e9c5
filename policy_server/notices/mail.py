"""E-mail through the school's SMTP server (stdlib `smtplib`; reused by reports later).

    send_mail(SmtpConfig(host="mail.school.kg", port=587, sender="kalkan@school.kg"),
              to="teacher@school.kg", subject="…", body="…")

STARTTLS when the server offers it and `starttls` is set; login when a user name is given.
Raises `MailError` with a message a person can act on."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid


class MailError(RuntimeError):
    pass


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    sender: str = ""
    username: str = ""
    password: str = ""
    starttls: bool = True
    timeout_s: float = 15.0


def build_message(config: SmtpConfig, *, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=config.sender.rpartition("@")[2] or "kalkan.local")
    message.set_content(body)  # UTF-8, for Kyrgyz and Russian
    return message


def send_mail(config: SmtpConfig, *, to: str, subject: str, body: str) -> None:
    message = build_message(config, to=to, subject=subject, body=body)
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
            smtp.ehlo()
            if config.starttls and smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, config.password)
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"the mail server refused the login ({exc.smtp_code}); check the SMTP user and "
                        "password in the notice settings") from None
    except smtplib.SMTPRecipientsRefused:
        raise MailError(f"the mail server refused the address {to}; check the person's e-mail") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"could not send through {config.host}:{config.port} ({exc}); check the SMTP "
                        "settings and that the server is reachable") from None
