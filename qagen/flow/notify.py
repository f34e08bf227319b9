"""Email the owner at start, at finish and on failure (SMTP via ``smtplib``/``email``).

A notification is recorded in the state store *before* it is sent and marked
sent only once the SMTP server accepted it. So an SMTP outage never touches
the dataset or the model, and never loses a message: it stays ``pending`` and
``qagen notify OUT/`` (or the next ``qagen run``) sends it again.

The password comes from the environment only (``QAGEN_SMTP_PASSWORD``), is
held as a ``SecretStr`` and is scrubbed from anything we store, send or log.
"""

from __future__ import annotations

import ipaddress
import logging
import smtplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from qagen.core.errors import StageError

if TYPE_CHECKING:
    from qagen.store import Store

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "auto": 25, "none": 25}


class NotifyError(StageError):
    """The message could not be delivered (it stays pending)."""


class NotifySettings(BaseSettings):
    """SMTP settings: flags > ``QAGEN_*`` environment > defaults. The password is env-only."""

    model_config = SettingsConfigDict(env_prefix="QAGEN_", extra="ignore")

    email: str | None = None  # recipient(s), comma-separated
    smtp_host: str = "localhost"
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    # auto: STARTTLS when the server offers it; starttls: required; ssl: implicit TLS (465); none: plain.
    smtp_tls: Literal["auto", "starttls", "ssl", "none"] = "auto"
    smtp_timeout: float = Field(default=30.0, gt=0)

    @property
    def port(self) -> int:
        return self.smtp_port or DEFAULT_PORTS[self.smtp_tls]

    @property
    def sender(self) -> str:
        return self.smtp_from or self.smtp_user or f"qagen@{socket.gethostname()}"

    def secrets(self) -> list[str]:
        return [self.smtp_password.get_secret_value()] if self.smtp_password else []


def load_notify_settings(**overrides: object) -> NotifySettings:
    given = {k: v for k, v in overrides.items() if v is not None}
    return NotifySettings(**given)


def scrub(text: str, secrets: list[str]) -> str:
    """Defence in depth: no secret value survives into a stored or sent text, whatever built it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_message(sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, recipient, subject
    msg["Message-ID"] = make_msgid(domain="qagen.local")
    msg.set_content(body)  # plain text: the eval table is aligned for a monospace font
    return msg


class UnencryptedLogin(NotifyError):
    """The server offers no encryption and is not this machine: the password is not sent."""


@contextmanager
def smtp_session(settings: NotifySettings, timeout: float | None = None) -> Iterator[smtplib.SMTP]:
    """A connected client, TLS as configured and logged in when a user is set (``send`` and ``qagen doctor``).

    smtplib's own errors pass through; an unencrypted login to another machine raises ``UnencryptedLogin``.
    """
    context = ssl.create_default_context()
    wait = timeout if timeout is not None else settings.smtp_timeout
    client: smtplib.SMTP
    if settings.smtp_tls == "ssl":
        client = smtplib.SMTP_SSL(settings.smtp_host, settings.port, timeout=wait, context=context)
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.port, timeout=wait)
    with client:
        client.ehlo()
        encrypted = settings.smtp_tls == "ssl"
        if settings.smtp_tls == "starttls" or (settings.smtp_tls == "auto" and client.has_extn("starttls")):
            client.starttls(context=context)
            client.ehlo()
            encrypted = True
        if settings.smtp_user:
            if not encrypted and not _is_loopback(settings.smtp_host):
                raise UnencryptedLogin(
                    f"refusing to send the SMTP password unencrypted to {settings.smtp_host}: "
                    "use --smtp-tls starttls or ssl"
                )
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            client.login(settings.smtp_user, password)
        yield client


def send(settings: NotifySettings, recipient: str, subject: str, body: str) -> None:
    """Deliver one message; raise ``NotifyError`` (without any secret in it) if that fails."""
    msg = build_message(settings.sender, recipient, subject, body)
    try:
        with smtp_session(settings) as client:
            client.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        # smtplib errors carry the server's reply, never our password; scrub anyway.
        text = f"{type(exc).__name__}: {exc}"
        raise NotifyError(scrub(text, settings.secrets())) from None


@dataclass(frozen=True)
class Delivery:
    sent: int
    pending: int
    errors: tuple[str, ...]


def notify(store: Store, settings: NotifySettings, run_id: int | None, kind: str, subject: str, body: str) -> bool:
    """Record, then try to send, one notification. Returns True if it was delivered now."""
    if not settings.email:
        return False
    secrets = settings.secrets()
    nid = store.add_notification(run_id, kind, settings.email, scrub(subject, secrets), scrub(body, secrets))
    return _attempt(store, settings, nid, settings.email, scrub(subject, secrets), scrub(body, secrets)) is None


def _attempt(store: Store, settings: NotifySettings, nid: int, recipient: str, subject: str, body: str) -> str | None:
    try:
        send(settings, recipient, subject, body)
    except NotifyError as exc:
        store.mark_notification(nid, sent=False, error=str(exc))
        log.warning("email %r not sent (kept as pending; resend with `qagen notify OUT/`): %s", subject, exc)
        return str(exc)
    store.mark_notification(nid, sent=True)
    log.info("email %r sent to %s", subject, recipient)
    return None


def resend_pending(store: Store, settings: NotifySettings) -> Delivery:
    """Send every pending notification again, oldest first, to the recipient it was recorded for."""
    sent, errors = 0, []
    for nid, _kind, recipient, subject, body in store.pending_notifications():
        error = _attempt(store, settings, nid, recipient, subject, body)
        if error is None:
            sent += 1
        else:
            errors.append(error)
    return Delivery(sent=sent, pending=len(errors), errors=tuple(errors))
