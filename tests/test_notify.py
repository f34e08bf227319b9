"""Email over a real SMTP server on loopback (aiosmtpd): delivery, pending when SMTP is down, resend."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("aiosmtpd", reason="aiosmtpd is in the test extra: pip install -e '.[test]'")

from qagen.flow.notify import NotifySettings, notify, resend_pending
from qagen.store import Store
from tests.smtp_server import SMTPServer, body, free_port

QAGEN = [sys.executable, "-m", "qagen.cli"]


def settings(port: int, **extra: object) -> NotifySettings:
    return NotifySettings(email="owner@example.org", smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none",
                          smtp_from="qagen@example.org", **extra)


def rows(out: Path) -> list[tuple[str, str, int, str]]:
    with sqlite3.connect(out / "qagen.sqlite") as db:
        return list(db.execute("SELECT kind, status, attempts, last_error FROM notifications ORDER BY id"))


def test_message_is_delivered_and_recorded_as_sent(tmp_path):
    table = "perspective   F1 base  F1 tuned\nquiz          10.0%    42.0%"
    server = SMTPServer()
    with server as inbox, Store(tmp_path) as store:
        assert notify(store, settings(server.port), 7, "finish", "qagen run finished", f"the table:\n{table}\n")
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert msg["To"] == "owner@example.org" and msg["From"] == "qagen@example.org"
    assert msg["Subject"] == "qagen run finished"
    assert table in body(msg)
    assert rows(tmp_path) == [("finish", "sent", 1, "")]


def test_authenticated_send_uses_the_password_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("QAGEN_SMTP_PASSWORD", "s3cret-pw")
    server = SMTPServer(users={"bot": "s3cret-pw"})
    with server as inbox, Store(tmp_path) as store:
        ns = NotifySettings(email="owner@example.org", smtp_host="127.0.0.1", smtp_port=server.port,
                            smtp_tls="none", smtp_user="bot")
        assert ns.smtp_password is not None and "s3cret" not in repr(ns)
        assert notify(store, ns, None, "start", "started", "hello")
    assert inbox.logins == [("bot", "s3cret-pw")]
    assert b"s3cret-pw" not in inbox.raw[0]


def test_wrong_password_keeps_the_message_pending(tmp_path, monkeypatch):
    monkeypatch.setenv("QAGEN_SMTP_PASSWORD", "wrong-pw-123")
    server = SMTPServer(users={"bot": "right"})
    with server as inbox, Store(tmp_path) as store:
        ns = NotifySettings(email="o@example.org", smtp_host="127.0.0.1", smtp_port=server.port, smtp_tls="none",
                            smtp_user="bot")
        assert not notify(store, ns, None, "finish", "done", "body")
    assert inbox.messages == []
    [(kind, status, attempts, error)] = rows(tmp_path)
    assert (kind, status, attempts) == ("finish", "pending", 1)
    assert "SMTPAuthenticationError" in error and "wrong-pw-123" not in error


def test_smtp_down_then_qagen_notify_resends(tmp_path):
    """SMTP down: nothing else touched, the email is pending; `qagen notify OUT/` sends it once SMTP is back."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text('{"messages": []}\n')
    port = free_port()  # nothing listens here yet
    with Store(out) as store:
        assert not notify(store, settings(port), 1, "finish", "qagen run finished", "eval table here")
    assert rows(out)[0][:3] == ("finish", "pending", 1)
    assert "ConnectionRefusedError" in rows(out)[0][3]
    assert (out / "train.jsonl").read_text() == '{"messages": []}\n'  # the dataset is untouched

    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    args = [*QAGEN, "notify", str(out), "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--smtp-tls", "none"]
    still_down = subprocess.run(args, capture_output=True, timeout=60, env=env, check=False)
    assert still_down.returncode == 1, still_down.stderr.decode()
    assert b"1 still pending" in still_down.stderr

    with SMTPServer(port) as inbox:
        result = subprocess.run([*args, "--json"], capture_output=True, timeout=60, env=env, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert b'"sent": 1' in result.stdout and b'"pending": 0' in result.stdout
    [msg] = inbox.messages
    assert msg["To"] == "owner@example.org"  # the recipient recorded with the notification
    assert msg["Subject"] == "qagen run finished" and "eval table here" in body(msg)
    assert rows(out)[0][:3] == ("finish", "sent", 3)

    with Store(out) as store:  # nothing left to send: a no-op
        assert resend_pending(store, settings(port)).sent == 0
