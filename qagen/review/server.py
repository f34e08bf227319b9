"""The review page's server: the standard library's threaded HTTP server on 127.0.0.1 only, behind a random token.

Every request must carry the token (``?token=`` in the page's URL; the page sends it back as the
``X-Qagen-Token`` header), compared in constant time; without it the answer is 403 and nothing else. The Host
header must name the loopback address the server listens on (a DNS-rebinding page cannot borrow the user's
browser). The page is one self-contained file: a Content-Security-Policy forbids it to load anything from
anywhere, this server included, except its own JSON.

Endpoints: ``GET /`` the page; ``GET /api/pairs`` the run's pairs (:func:`qagen.review.items.page_data`);
``GET /api/stats`` the checks against the human (:mod:`qagen.review.stats`); ``POST /api/review`` with
``{"key", "decision"?, "question"?, "answer"?}`` stores a decision or an edit and returns the stored row.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import threading
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Self
from urllib.parse import parse_qs, urlsplit

from qagen.core.errors import InputError
from qagen.review import stats
from qagen.review.items import Decisions, page_data
from qagen.store import Store

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MAX_BODY = 1 << 20
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
       "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def page_html() -> str:
    return files("qagen.review").joinpath("page.html").read_text(encoding="utf-8")


class ReviewServer:
    """Serves one run's review page until :meth:`close`; ``url`` holds the token. Use as a context manager, or
    :meth:`serve_forever` from the CLI."""

    def __init__(self, store: Store, run_id: int, *, host: str = LOOPBACK, port: int = 0, token: str | None = None):
        if not ipaddress.ip_address(host).is_loopback:
            raise InputError(f"the review server listens on the loopback interface only, not {host}")
        self.store, self.run_id = store, run_id
        self.token = token or secrets.token_urlsafe(24)
        self.decisions = Decisions(store, run_id)
        self.lock = threading.Lock()  # one SQLite connection: one request at a time touches the store
        self.page = page_html()
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.host, self.port = str(self.httpd.server_address[0]), int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/?token={self.token}"

    def start(self) -> ReviewServer:
        """Serve from a background thread (tests, the screenshot)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="qagen-review", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the endpoints do ----------------------------------------------
    def allowed(self, token: str | None, host: str | None) -> bool:
        ok_token = token is not None and hmac.compare_digest(token.encode(), self.token.encode())
        return ok_token and host in (f"{self.host}:{self.port}", f"localhost:{self.port}")

    def pairs(self) -> dict[str, object]:
        with self.lock:
            return page_data(self.store, self.run_id)

    def stats(self) -> dict[str, object]:
        with self.lock:
            labelled = stats.rated(self.store, self.run_id)
            rows = [row.to_dict() for row in stats.agreement(self.store, self.run_id, labelled)]
            return {"judge_threshold": stats.judge_threshold(self.store, self.run_id), "checks": rows,
                    "rated": len(labelled), "calibrate_min": stats.MIN_RATINGS}

    def review(self, body: dict[str, object]) -> dict[str, object]:
        key = body.get("key")
        fields = {name: body.get(name) for name in ("decision", "question", "answer")}
        if not isinstance(key, str) or any(v is not None and not isinstance(v, str) for v in fields.values()):
            raise ValueError("expected {key, decision?, question?, answer?} as strings")
        with self.lock:
            row = self.decisions.apply(key, **fields)  # type: ignore[arg-type]
        return asdict(row)


def _handler(server: ReviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "qagen-review"
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:
            log.debug("review %s %s", self.command, urlsplit(self.path).path)  # never the query: it holds the token

        def _token(self) -> str | None:
            query = parse_qs(urlsplit(self.path).query)
            return self.headers.get("X-Qagen-Token") or (query.get("token") or [None])[0]

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: object) -> None:
            self._send(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8")

        def _guard(self) -> bool:
            if server.allowed(self._token(), self.headers.get("Host")):
                return True
            self._send(HTTPStatus.FORBIDDEN, b"forbidden: open the URL qagen review printed (it holds the token)\n",
                       "text/plain; charset=utf-8")
            return False

        def do_GET(self) -> None:
            if not self._guard():
                return
            route = urlsplit(self.path).path
            if route == "/":
                self._send(HTTPStatus.OK, server.page.encode(), "text/html; charset=utf-8")
            elif route == "/api/pairs":
                self._json(HTTPStatus.OK, server.pairs())
            elif route == "/api/stats":
                self._json(HTTPStatus.OK, server.stats())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:
            if not self._guard():
                return
            if urlsplit(self.path).path != "/api/review":
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "too large"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
                self._json(HTTPStatus.OK, server.review(body))
            except KeyError:
                self._json(HTTPStatus.NOT_FOUND, {"error": "no such pair in this run"})
            except ValueError as exc:  # json.JSONDecodeError included
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

    return Handler
