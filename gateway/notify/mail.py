"""Mail over SMTP: STARTTLS (the server's certificate checked) before any login, the
password from the vault, one plain-text message per notice. Messages of one story thread in
mail clients: each carries ``References`` to the story's first message id."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from gateway.notify.chat import facts, headline, story
from gateway.notify.delivery import DeliveryError
from gateway.notify.settings import Channel
from vault.secret import Secret

TIMEOUT = 10.0


def _message_id(value: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-._" else "." for c in value)
    return f"<{safe}@lockgate>"


def compose(channel: Channel, notice: Mapping[str, Any], recipients: Sequence[str]) -> EmailMessage:
    mail = EmailMessage()
    line = headline(notice, escape=lambda v: " ".join(str(v if v is not None else "").split()))
    mail["Subject"] = f"[lockgate] {line}"
    mail["From"] = channel.sender
    mail["To"] = ", ".join(recipients)
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = _message_id(str(notice["id"]))
    thread = _message_id(f"thread.{notice['thread']}")
    mail["References"] = thread
    mail["In-Reply-To"] = thread
    mail["X-Lockgate-Event"] = str(notice["event"])
    rows = "\n".join(f"{label + ':':<14} {value}" for label, value in facts(notice))
    mail.set_content(
        f"{line}\n\n{story(notice)}\n{rows}\n\n"
        f"Open it on Lockgate (sign-in needed): {notice['link']}\n"
    )
    return mail


def _send(channel: Channel, mail: EmailMessage, password: Secret | None) -> None:
    host, _, port = channel.smtp.rpartition(":")
    with smtplib.SMTP(host.strip("[]"), int(port), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        if channel.starttls:
            context = ssl.create_default_context(cafile=channel.tls_ca or None)
            smtp.starttls(context=context)
            smtp.ehlo()
        if channel.username:
            if password is None:
                raise DeliveryError(
                    f"no SMTP password for {channel.name}; run: lockgate notifications "
                    f"secret {channel.name}"
                )
            smtp.login(channel.username, password.reveal_text())
        smtp.send_message(mail)


async def deliver_mail(
    channel: Channel, notice: Mapping[str, Any], recipients: Sequence[str], password: Secret | None
) -> None:
    if not recipients:
        return  # nobody to tell (no approver has an address): nothing to retry
    mail = compose(channel, notice, recipients)
    try:
        await asyncio.to_thread(_send, channel, mail, password)
    except DeliveryError:
        raise
    except smtplib.SMTPAuthenticationError:
        raise DeliveryError("the SMTP server refused the login") from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"the SMTP server answered {exc.smtp_code}") from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"the SMTP server cannot be reached ({type(exc).__name__})") from None
