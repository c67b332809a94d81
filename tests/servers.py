"""Small real servers for the suite: a reverse proxy that injects transient faults."""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


class FlakyProxy:
    """Forwards HTTP to `target`, answering the first `failures[(method, kind)]` matching requests
    with `status` (or dropping the connection when the status is 0) instead. `seen` records
    (method, kind, failed) for every request. Absolute URLs the target
    hands out (resumable-upload Location headers) are rewritten to point back at the proxy."""

    def __init__(self, target: str, failures: dict[tuple[str, str], int], status: int = 503):
        self.target = urlparse(target)
        self.failures = dict(failures)
        self.status = status
        self.seen: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                kind = proxy.kind_of(self.command, self.path)
                with proxy.lock:
                    remaining = proxy.failures.get((self.command, kind), 0)
                    if remaining:
                        proxy.failures[(self.command, kind)] = remaining - 1
                fail = bool(remaining)
                proxy.seen.append((self.command, kind, fail))
                if fail and proxy.status == 0:
                    # A reset, as far as the client can tell. shutdown(), not close(): the
                    # handler's file objects keep the socket open past a close().
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fail:
                    payload = b'{"error": {"code": 503, "message": "injected by FlakyProxy"}}'
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    self.send_header(key, proxy.rewrite(value))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # clients dropping connections we reset on purpose are not news

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def kind_of(method: str, path: str) -> str:
        if path.startswith("/upload/"):
            return "upload-chunk" if "upload_id" in path else "upload-start"
        if "?alt=media" in path or "alt=media" in path:
            return "download"
        if method == "GET" and path.rstrip("/").split("?")[0].endswith("/o"):
            return "list"
        return "other"

    def rewrite(self, value: str) -> str:
        for host in (f"{self.target.hostname}:{self.target.port}", f"localhost:{self.target.port}"):
            value = value.replace(f"http://{host}", self.url)
        return value

    def __enter__(self) -> "FlakyProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
