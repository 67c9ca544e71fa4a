"""The HTTP inference server: stdlib ``ThreadingHTTPServer`` in front of a dynamic batcher.

Why the standard library: the work is a blocking forward pass that one batcher thread owns, so
an event loop (aiohttp) buys nothing here, and the server stays dependency-free. Each
connection gets a thread that reads and checks each request, queues it and waits for its
outputs. HTTP/1.1 keep-alive lets a client reuse its connection; shutdown waits only for
requests in flight (an idle kept-alive connection holds nothing; its thread is a daemon that
ends with the socket's timeout or the process).

Routes: ``POST /predict`` (also ``/v1/predict``; JSON, ``.npy`` or ``.npz`` body), ``GET
/health``, ``GET /metrics``, and the Open Inference Protocol v2 under ``/v2`` (:mod:`.oip`).
Statuses: 400 bad body/shape/dtype, 404, 411 no Content-Length, 413 body too large, 503 queue
full or shutting down, 504 no result within ``request_timeout_s``, 500 a model failure.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from slimkit.errors import DataError
from slimkit.export.sessions import session_for
from slimkit.model import Model
from slimkit.serve import oip
from slimkit.serve.batcher import Batcher, QueueFull, Stopping
from slimkit.serve.codec import BadRequest, decode, encode, response_type
from slimkit.serve.config import ServeConfig
from slimkit.serve.lifecycle import ServerLifecycle
from slimkit.serve.metrics import Metrics
from slimkit.serve.padding import plan_padding

logger = logging.getLogger(__name__)
DRAIN_CAP = 8 * 2**20  # after a 413, read (and drop) this much so the client sees the answer


class InferenceServer(ServerLifecycle):
    """Serve ``model`` over HTTP with dynamic batching; ``start()``/``stop()`` or ``with``.

    Example:
        >>> import json, urllib.request
        >>> from slimkit.testing import tiny_model
        >>> with InferenceServer(tiny_model(), ServeConfig(port=0, runtime="torch")) as srv:
        ...     body = json.dumps({"inputs": [[0.0] * 8]}).encode()
        ...     with urllib.request.urlopen(srv.url + "/predict", body) as r:
        ...         len(json.load(r)["outputs"]["output"][0])
        4
    """

    def __init__(self, model: Model, config: ServeConfig | None = None) -> None:
        self.model = model
        self.config = config or ServeConfig()
        self.metrics = Metrics()
        c = self.config
        self.session = session_for(model, c.runtime, c.options)
        self.padding = plan_padding(model, self.session, c.max_padding) if c.batching else None
        self.batcher = Batcher(self.session, c.max_batch if c.batching else 1,
                               c.max_wait_ms if c.batching else 0.0, c.max_queue, self.metrics,
                               self.padding)
        try:
            self.listen(_HTTPServer, _Handler, "slimkit-serve-http")
        except DataError:
            self.session.close()
            raise

    def _start_work(self) -> None:
        self.batcher.start()

    def _stop_work(self, deadline: float) -> None:
        self.wait_idle(deadline)
        self.batcher.stop(max(deadline - time.monotonic(), 0.1))
        self.session.close()

    def predict(self, body: bytes, content_type: str,
                accept: str = "") -> tuple[int, dict[str, Any] | bytes]:
        """(status, response) for a prediction request body; the response of a success is
        encoded as :func:`~slimkit.serve.codec.response_type` of ``accept`` says."""
        try:
            inputs = decode(body, content_type, self.model.inputs, self.config.max_body_bytes)
        except BadRequest as exc:
            return 400, {"error": str(exc)}
        status, outputs = self.infer(inputs)
        if isinstance(outputs, str):
            return status, {"error": outputs}
        return 200, encode(self.model.output_names, outputs, response_type(accept))

    def infer(self, inputs: dict[str, np.ndarray]) -> tuple[int, list[np.ndarray] | str]:
        """(200, outputs) for checked inputs, run through the batcher; else (status, error)."""
        try:
            future = self.batcher.submit(inputs)
        except (QueueFull, Stopping) as exc:
            return 503, str(exc)
        try:
            return 200, future.result(self.config.request_timeout_s)
        except FutureTimeout:
            future.cancel()
            return 504, f"no result within {self.config.request_timeout_s:g} s"
        except DataError as exc:
            return 400, str(exc)
        except Exception as exc:
            logger.exception("model failure")
            return 500, f"the model failed: {type(exc).__name__}: {exc}"

    def health(self) -> tuple[int, dict[str, Any]]:
        draining = self.stopping.is_set()
        return (503 if draining else 200), {
            "status": "draining" if draining else "ok", "model": self.model.name,
            "runtime": self.config.runtime, "queue": self.batcher.depth}

    def snapshot(self) -> dict[str, Any]:
        c = self.config
        padded = [n for n, _ in self.padding.inputs] if self.padding is not None else []
        return self.metrics.snapshot(queue_depth=self.batcher.depth, in_flight=self._in_flight,
                                     max_batch=c.max_batch if c.batching else 1,
                                     max_wait_ms=c.max_wait_ms if c.batching else 0.0,
                                     padded_inputs=padded,
                                     max_padding=c.max_padding if padded else 0.0)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never keeps the process alive; stop() waits itself
    request_queue_size = 128  # the listen backlog (socketserver: 5, too few for 16 clients)
    app: InferenceServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "slimkit-serve"
    protocol_version = "HTTP/1.1"  # keep-alive; every reply carries a Content-Length

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.app.config.request_timeout_s)  # slow clients

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        app = self.server.app
        if self.path == "/health":
            self._reply(*app.health(), record=False)
        elif self.path == "/metrics":
            self._reply(200, app.snapshot(), record=False)
        elif self.path.startswith("/v2"):
            self._v2(oip.handle_get(app, self.path), record=False)
        else:
            self._reply(404, {"error": f"no route GET {self.path}; try /health, /metrics"},
                        record=False)

    def do_POST(self) -> None:
        app = self.server.app
        start = time.perf_counter()
        app.metrics.request()
        app.enter()
        try:
            status, payload = self._predict(app)
            if status:
                self._reply(status, payload, time.perf_counter() - start if status == 200
                            else None, kind=response_type(self.headers.get("Accept", "")))
        finally:
            app.leave()

    def _predict(self, app: InferenceServer) -> tuple[int, dict[str, Any] | bytes]:
        if self.path not in ("/predict", "/v1/predict") and not self.path.startswith("/v2/"):
            return 404, {"error": f"no route POST {self.path}; use /predict"}
        try:
            length = int(self.headers["Content-Length"])
        except (TypeError, ValueError):
            self.close_connection = True  # a body of unknown length may follow
            return 411, {"error": "send the body with a Content-Length header"}
        limit = app.config.max_body_bytes
        if length > limit:
            self.close_connection = True
            self._reply(413, {"error": f"body of {length} bytes is over the {limit} byte limit"})
            self._discard(min(length, DRAIN_CAP))
            return 0, b""
        try:
            body = self.rfile.read(length)
        except (TimeoutError, OSError):
            body = b""
        if len(body) < length:  # the client went away (or stalled) mid-body
            app.metrics.disconnect()
            self.close_connection = True
            return 0, b""
        if self.path.startswith("/v2/"):
            self._v2(oip.handle_infer(app, self.path, body, self.headers.get(oip.HEADER_LENGTH)))
            return 0, b""
        return app.predict(body, self.headers.get("Content-Type", "application/json"),
                           self.headers.get("Accept", ""))

    def _discard(self, n: int) -> None:
        try:
            while n > 0 and (chunk := self.rfile.read(min(n, 2**16))):
                n -= len(chunk)
        except (TimeoutError, OSError):
            pass

    def _v2(self, reply: oip.V2Reply, record: bool = True) -> None:
        self._reply(reply.status, reply.body, record=record, kind=reply.kind,
                    headers=reply.headers)

    def _reply(self, status: int, payload: dict[str, Any] | bytes,
               seconds: float | None = None, record: bool = True,
               kind: str = "application/json", headers: dict[str, str] | None = None) -> None:
        """Send ``payload`` (bytes encoded as ``kind``; a dict as JSON); prediction replies
        (``record``) go into the metrics."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        kind = kind if isinstance(payload, bytes) else "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            if status == 503:
                self.send_header("Retry-After", "1")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.server.app.metrics.disconnect()
            return
        if record:
            self.server.app.metrics.response(status, seconds)
