"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the notify/flow tests."""

from __future__ import annotations

import email
import email.policy
import socket
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)  # (user, password) the server accepted

    async def handle_DATA(self, server, session, envelope):
        self.raw.append(envelope.content)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


class SMTPServer:
    """``with SMTPServer(port) as inbox:`` - with ``users`` it requires AUTH (plain text: loopback only)."""

    def __init__(self, port: int | None = None, users: dict[str, str] | None = None):
        self.port = port or free_port()
        self.inbox = Inbox()
        self.users = users
        kwargs: dict[str, object] = {}
        if users is not None:
            kwargs = {"authenticator": self._auth, "auth_required": True, "auth_require_tls": False}
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **kwargs)

    def _auth(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and self.users is not None:
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(user) == password:
                self.inbox.logins.append((user, password))
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def __enter__(self) -> Inbox:
        self.controller.start()
        return self.inbox

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def body(message: EmailMessage) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    return text.replace("\r\n", "\n")  # SMTP carries CRLF line ends
