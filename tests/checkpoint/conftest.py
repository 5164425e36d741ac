"""A throwaway HTTP server on 127.0.0.1 for the weight-download tests (no internet needed).

``weight_server`` serves ``files`` (URL path -> bytes) from a thread, records every request path, and can
cut a response off midway (``cut_off`` paths: full ``Content-Length``, half the bytes, then the connection
is closed). It is shut down at the end of each test; socket operations time out after a few seconds so a
stuck test cannot hang. ``weights_env`` points ``$AQFORMER_CACHE`` at a temporary folder and every scheme's
base URL at the server.
"""
import http.server
import socket
import threading
from typing import Dict, List, Set

import pytest

from aqformer_d2.checkpoint.url_schemes import SCHEMES

_SOCKET_TIMEOUT_S = 5.0
_JOIN_TIMEOUT_S = 10.0


class WeightServer:
    def __init__(self):
        self.files: Dict[str, bytes] = {}
        self.cut_off: Set[str] = set()
        self.requests: List[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = _SOCKET_TIMEOUT_S

            def do_GET(self):  # noqa: N802  (http.server's naming)
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "not here")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.path in server.cut_off:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, format, *args):  # noqa: A002  (keep pytest's output clean)
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=_JOIN_TIMEOUT_S)
        assert not self._thread.is_alive(), "the test HTTP server did not stop"


def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` of a port nobody listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def weight_server():
    server = WeightServer()
    try:
        yield server
    finally:
        server.stop()


def point_schemes_at(monkeypatch, base: str) -> None:
    """Set every ``AQFORMER_<SCHEME>_BASE_URL`` to ``<base>/<scheme>``."""
    for scheme in SCHEMES:
        monkeypatch.setenv(f"AQFORMER_{scheme.upper()}_BASE_URL", f"{base}/{scheme}")


@pytest.fixture
def weights_env(monkeypatch, tmp_path, weight_server):
    """A private cache folder and every scheme's base URL on the test server; yields the server."""
    monkeypatch.setenv("AQFORMER_CACHE", str(tmp_path / "cache"))
    point_schemes_at(monkeypatch, weight_server.url)
    weight_server.cache = tmp_path / "cache"
    return weight_server
