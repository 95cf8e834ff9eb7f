"""A Docker Engine API on a unix socket in the place of a Docker daemon (none runs
here), for the real docker client: it answers ``/_ping``, ``/info``, ``/version``
and ``/images/get`` with what the test gives it, and records every request.

The answers the tests give are shaped as a daemon sends them: the fields of moby's
api/types/system Info and types.Version that the client prints with
``--format '{{json .}}'``, and DriverStatus as each image store reports it (the
containerd store: ``[["driver-type", "io.containerd.snapshotter.v1"]]``, moby
daemon/containerd/service.go LayerStoreStatus; overlay2, the classic store: its
graph driver status, as in kubernetes-sigs/kind#3795's `docker info -f
'{{ .DriverStatus }}'` output)."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCKER_29_CONTAINERD_STORE = {
    "info": {
        "ServerVersion": "29.4.0",
        "Driver": "overlayfs",
        "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
        "OSType": "linux",
        "Architecture": "x86_64",
    },
    "version": {"Version": "29.4.0", "ApiVersion": "1.52", "MinAPIVersion": "1.44", "Os": "linux", "Arch": "amd64"},
}
DOCKER_28_CLASSIC_STORE = {
    "info": {
        "ServerVersion": "28.0.4",
        "Driver": "overlay2",
        "DriverStatus": [
            ["Backing Filesystem", "extfs"],
            ["Supports d_type", "true"],
            ["Using metacopy", "false"],
            ["Native Overlay Diff", "true"],
            ["userxattr", "false"],
        ],
        "OSType": "linux",
        "Architecture": "x86_64",
    },
    "version": {"Version": "28.0.4", "ApiVersion": "1.48", "MinAPIVersion": "1.24", "Os": "linux", "Arch": "amd64"},
}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@dataclass
class FakeDockerDaemon:
    socket_path: Path
    answers: dict[str, Any]
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

            def _serve(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                outer.requests.append((self.command, url.path, urllib.parse.parse_qs(url.query)))
                body = b"OK"
                if url.path.endswith("/info"):
                    body = json.dumps(outer.answers["info"]).encode()
                elif url.path.endswith("/version"):
                    body = json.dumps(outer.answers["version"]).encode()
                elif url.path.endswith("/images/get"):
                    body = b"an image archive"
                self.send_response(200)
                self.send_header("Api-Version", str(outer.answers["version"]["ApiVersion"]))
                self.send_header("Ostype", "linux")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = _serve

        self.server = _Server(str(self.socket_path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fake-docker", daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
