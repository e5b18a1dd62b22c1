"""A host-only HTTP server for build inputs (wheels, .deb files).

Copying a wheelhouse into a build context leaves it in an image layer even
if a later step deletes it. Serving it from the host instead (the build runs
with host networking) keeps every wheel and package file out of the image.

The build steps name the server by a fixed URL (:data:`HOST` and the
configured port), never by what this run happened to get: the classic
builder keys a RUN step's cache on its text, so a per-run address or port
there would make an unchanged rebuild a new image. What differs per run is
the loopback address the server listens on (one of 127.0.0.0/8, free for
this run), and the build maps :data:`HOST` to it in the step containers'
``/etc/hosts`` (``extra_hosts``), which is not part of any cache key. Two
builds at once, or any other program on the configured port of 127.0.0.1,
then never push a build off its cached steps.
"""

from __future__ import annotations

import errno
import functools
import http.server
import secrets
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from ppml_image import _signals
from ppml_image.errors import BuildError

# A name no resolver answers (RFC 6761 .invalid): only the build's /etc/hosts does.
HOST = "ppml-wheelhouse.invalid"
_TRIES = 64  # of random loopback addresses, before giving up


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    """Its threads leave Ctrl-C and SIGTERM to the main thread (see _signals)."""

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        _signals.leave_to_main_thread()
        super().process_request_thread(request, client_address)


def _random_loopback() -> str:
    """An address of 127.0.0.0/8 other than the 127.0.0.x that programs commonly use."""
    return f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


class FileServer:
    """Serve *root* on ``port`` of a free loopback address while the ``with`` block runs."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._server = self._bind(handler)
        self.address = str(self._server.server_address[0])
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _bind(self, handler: Any) -> _Server:
        for _ in range(_TRIES):
            try:
                return _Server((_random_loopback(), self.port), handler)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise BuildError(f"[base] wheel_server_port {self.port}: cannot serve the "
                                     f"wheelhouse on a loopback address ({exc.strerror})"
                                     ) from None
        # Only a listener on every address (0.0.0.0:PORT) takes them all.
        raise BuildError(f"[base] wheel_server_port {self.port}: taken on every loopback address "
                         "(a program listens on 0.0.0.0 there): set another port")

    def _serve(self) -> None:
        _signals.leave_to_main_thread()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        """What the build steps use: the same for every run with this port."""
        return f"http://{HOST}:{self.port}"

    @property
    def extra_hosts(self) -> dict[str, str]:
        """The step containers' ``/etc/hosts`` entry that points :data:`HOST` here."""
        return {HOST: self.address}

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
