"""A loopback HTTP server in the place of a Kubernetes API server (none can run
here). The test decides how each request is answered, including the ways a real
server, or the network in between, fails: a connection reset before any answer,
bytes that are not HTTP, a page that is not the API's JSON, an API error. Every
request is recorded, so a test can check what the real client sent."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import socket
import struct
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """An HTTP answer; ``status`` 0 resets the connection instead, and ``raw``
    is written as it is, without any HTTP framing. ``stall``: read the request and
    never answer. ``websocket``: accept the upgrade to an exec stream (as the API
    server does for pods/exec) and then send nothing. ``headers``: added to the answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    raw: bytes | None = None
    stall: bool = False
    websocket: bool = False
    headers: tuple[tuple[str, str], ...] = ()


RESET = Reply(status=0)
STALL = Reply(stall=True)
WEBSOCKET_SILENT = Reply(websocket=True)
#: RFC 6455 section 1.3: the accept key is derived from the client's key with this GUID.
_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
NOT_HTTP = Reply(raw=b"\x15\x03\x01\x00\x02\x02\x50 not an HTTP status line\r\n\r\n")
HTML_PAGE = Reply(200, b"<html><body>Sign in to continue</body></html>", "text/html")


#: What ``GET /version/`` answers on a Kubernetes 1.33 API server.
SERVER_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.4",
    "gitCommit": "74cdb426e2d63ae9ff1d6e4a8e0d68b3ba4a1e7c",
    "gitTreeState": "clean",
    "buildDate": "2025-08-12T00:00:00Z",
    "goVersion": "go1.24.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def json_reply(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj).encode())


def api_error(status: int, reason: str, message: str) -> Reply:
    """A ``Status`` object, as the API server sends with every error."""
    return json_reply(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": status},
        status,
    )


@dataclass
class LoopbackApiServer:
    answer: Callable[[Request], Reply] = lambda request: RESET
    requests: list[Request] = field(default_factory=list)
    #: Connections that a stalled or websocket reply holds open, closed by the client since.
    closed_by_client: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self
        self.stopping = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                url = urllib.parse.urlsplit(self.path)
                request = Request(
                    self.command,
                    url.path,
                    urllib.parse.parse_qs(url.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                outer.requests.append(request)
                reply = outer.answer(request)
                self.close_connection = True
                if reply.stall or reply.websocket:
                    if reply.websocket:
                        accept = base64.b64encode(
                            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + _WEBSOCKET_GUID).encode()).digest()
                        ).decode()
                        self.wfile.write(
                            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            + f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n".encode()
                        )
                        self.wfile.flush()
                    self.connection.settimeout(0.1)
                    while not outer.stopping.is_set():
                        try:
                            if not self.connection.recv(4096):
                                outer.closed_by_client.append(url.path)
                                break
                        except TimeoutError:
                            continue
                        except OSError:
                            outer.closed_by_client.append(url.path)
                            break
                elif reply.raw is not None:
                    self.wfile.write(reply.raw)
                elif reply.status == 0:
                    # Linger 0: close() sends a TCP reset instead of a clean end.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                else:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="loopback-api", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            "apiVersion: v1\n"
            "kind: Config\n"
            f"clusters:\n- name: loopback\n  cluster: {{server: {self.url}}}\n"
            "users:\n- name: tester\n  user: {token: not-a-real-token}\n"
            "contexts:\n- name: loopback\n  context: {cluster: loopback, user: tester}\n"
            "current-context: loopback\n"
        )
        return path

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
