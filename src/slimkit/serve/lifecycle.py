"""What every slimkit HTTP server shares: listening (one clear line when the port is taken),
serving from a background thread, counting the requests in flight, stopping gracefully (no new
connections, the requests in flight finished), and serving until SIGTERM or SIGINT.

A server sets ``config`` (with ``host`` and ``port``) and calls :meth:`listen` with its
``ThreadingHTTPServer`` subclass and handler; it implements ``_start_work`` (its batcher or
scheduler) and ``_stop_work(deadline)``, which finishes what is in flight.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from slimkit.errors import DataError

logger = logging.getLogger(__name__)


class ServerLifecycle:
    config: Any
    _httpd: Any

    def listen(self, server_class: type[ThreadingHTTPServer],
               handler: type[BaseHTTPRequestHandler], thread_name: str) -> None:
        c = self.config
        try:
            self._httpd = server_class((c.host, c.port), handler)
        except OSError as exc:
            raise DataError(f"cannot listen on {c.host}:{c.port}: {exc.strerror or exc}; "
                            "choose another --port") from None
        self._httpd.app = self  # type: ignore[attr-defined]
        self._thread_name = thread_name
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._idle = threading.Condition()
        self.stopping = threading.Event()
        self._stopped = False

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Any:
        """Start the server's work and the listener in background threads."""
        self._start_work()
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name=self._thread_name, daemon=True)
        self._thread.start()
        logger.info("serving on %s", self.url)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful: stop accepting, finish the requests in flight, then close everything."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()  # no new connections; returns once the accept loop ended
        self._stop_work(time.monotonic() + timeout)
        self._httpd.server_close()

    def wait_idle(self, deadline: float) -> None:
        """Until no request is in flight, or ``deadline`` (``time.monotonic()``)."""
        with self._idle:
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)

    def serve_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully (main thread only)."""
        got = threading.Event()

        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %s: finishing requests in flight", signal.Signals(signum).name)
            got.set()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not got.wait(0.2):
                pass
        finally:
            self.stop()
            for s, h in previous.items():
                signal.signal(s, h)

    # called by the handler threads -------------------------------------------------------

    def enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _start_work(self) -> None:
        raise NotImplementedError

    def _stop_work(self, deadline: float) -> None:
        raise NotImplementedError
