"""A host-only HTTP server for build inputs (wheels, .deb files).

Copying a wheelhouse into a build context leaves it in an image layer even
if a later step deletes it. Serving it from the host instead (the build runs
with host networking) keeps every wheel and package file out of the image.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from ppml_image import _signals


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    """Its threads leave Ctrl-C and SIGTERM to the main thread (see _signals)."""

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        _signals.leave_to_main_thread()
        super().process_request_thread(request, client_address)


class FileServer:
    """Serve *root* on 127.0.0.1 while the ``with`` block runs."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        try:
            self._server = _Server(("127.0.0.1", port), handler)
        except OSError:  # taken: any free port works, at the price of a cache miss
            self._server = _Server(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        _signals.leave_to_main_thread()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
