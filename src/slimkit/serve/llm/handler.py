"""The HTTP handler of :class:`~slimkit.serve.llm.server.LLMServer`: OpenAI's routes, replies
in one piece or streamed as server-sent events, and clients that go away.

A streamed reply is ``text/event-stream`` in chunked transfer encoding (the connection stays
usable for the next request): ``data: <chunk>`` events as OpenAI sends them, then
``data: [DONE]``. While a generation runs, the handler watches its socket: a client that closed
the connection (or a failed write) cancels the generation, which frees its batch slot and KV
cache at the scheduler's next iteration. Every error reply has OpenAI's error shape.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from slimkit.serve.batcher import QueueFull, Stopping
from slimkit.serve.llm.continuous import Finish, Generation
from slimkit.serve.llm.detokenize import TextStream
from slimkit.serve.llm.openai_api import OpenAIError, parse_request, sse, usage

if TYPE_CHECKING:
    from slimkit.serve.llm.server import Job, LLMServer

logger = logging.getLogger(__name__)
POLL_S = 0.1  # how often a waiting handler checks that its client is still there
ROUTES = {"/v1/chat/completions": True, "/v1/completions": False}  # path -> chat


class ClientGone(Exception):
    """The client closed its connection before the reply was complete."""


class LLMHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    app: LLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s failed", client_address, exc_info=True)


class LLMHandler(BaseHTTPRequestHandler):
    server: LLMHTTPServer
    server_version = "slimkit-serve"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.app.config.request_timeout_s)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        app = self.server.app
        if self.path == "/v1/models":
            self._json(200, app.models(), record=False)
        elif self.path == f"/v1/models/{app.name}":
            self._json(200, app.models()["data"][0], record=False)
        elif self.path == "/health":
            self._json(*app.health(), record=False)
        elif self.path == "/metrics":
            self._json(200, app.snapshot(), record=False)
        else:
            self._error(OpenAIError(f"no route GET {self.path}; try /v1/models, /health, "
                                    "/metrics", status=404, code="not_found"), record=False)

    def do_POST(self) -> None:
        app = self.server.app
        app.metrics.request()
        app.enter()
        try:
            self._post(app)
        except ClientGone:
            app.metrics.disconnect()
            self.close_connection = True
        finally:
            app.leave()

    def _post(self, app: LLMServer) -> None:
        start = time.perf_counter()
        if self.path not in ROUTES:
            self._error(OpenAIError(f"no route POST {self.path}; use /v1/chat/completions or "
                                    "/v1/completions", status=404, code="not_found"))
            return
        body = self._body(app.config.max_body_bytes)
        if body is None:
            return
        try:
            job = app.prepare(parse_request(body, chat=ROUTES[self.path]))
            generation = app.batcher.submit(job.prompt, job.params)
        except OpenAIError as exc:
            self._error(exc)
            return
        except (QueueFull, Stopping) as exc:
            self._error(OpenAIError(str(exc), status=503, kind="server_error",
                                    code="overloaded"))
            return
        try:
            if job.stream:
                self._stream(job, generation)
            else:
                self._complete(job, generation, start)
        finally:
            generation.cancel()  # a no-op once it finished; frees the slot otherwise

    def _body(self, limit: int) -> bytes | None:
        try:
            length = int(self.headers["Content-Length"])
        except (TypeError, ValueError):
            self.close_connection = True
            self._error(OpenAIError("send the body with a Content-Length header", status=411))
            return None
        if length > limit:
            self.close_connection = True
            self._error(OpenAIError(f"body of {length} bytes is over the {limit} byte limit",
                                    status=413))
            return None
        try:
            body = self.rfile.read(length)
        except OSError:
            raise ClientGone from None
        if len(body) < length:
            raise ClientGone
        return body

    # one reply ------------------------------------------------------------------------------

    def _complete(self, job: Job, generation: Generation, start: float) -> None:
        text = TextStream(self.server.app.tokenizer, job.prompt, job.stop)
        parts: list[str] = []
        reason, tokens = self._run(job, generation, text, parts.append)
        if reason not in ("stop", "length"):
            self._error(_failure(reason))
            return
        body = job.reply.complete("".join(parts), reason, usage(len(job.prompt), tokens))
        self._json(200, body, time.perf_counter() - start)

    # a stream of server-sent events ---------------------------------------------------------

    def _stream(self, job: Job, generation: Generation) -> None:
        self._start_stream()
        reply = job.reply
        if reply.chat:
            self._event(reply.chunk("", first=True))
        text = TextStream(self.server.app.tokenizer, job.prompt, job.stop)
        reason, tokens = self._run(job, generation, text,
                                   lambda piece: self._event(reply.chunk(piece)))
        if reason in ("stop", "length"):
            self._event(reply.chunk(None, reason))
            if job.include_usage:
                self._event(reply.usage_chunk(usage(len(job.prompt), tokens)))
            self.server.app.metrics.response(200)
        else:
            self._event(_failure(reason).body())
            self.server.app.metrics.response(_failure(reason).status)
        self._event("[DONE]")
        self._write(b"0\r\n\r\n")

    def _start_stream(self) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
        except OSError:
            raise ClientGone from None

    def _event(self, payload: dict[str, Any] | str) -> None:
        data = sse(payload)
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            raise ClientGone from None

    # the generation -------------------------------------------------------------------------

    def _run(self, job: Job, generation: Generation, text: TextStream,
             send: Callable[[str], None]) -> tuple[str, int]:
        """Read the generation's tokens, send its text as it becomes final; (finish reason,
        tokens generated). Reasons beyond stop/length: ``timeout``, ``cancelled``, ``error``."""
        timeout = self.server.app.config.request_timeout_s
        received = 0
        last_event = checked = time.monotonic()
        while True:
            event = generation.next_event(POLL_S)
            now = time.monotonic()
            if now - checked >= POLL_S:  # tokens may come faster than the poll: check anyway
                checked = now
                if self._client_gone():
                    raise ClientGone
            if event is None:
                if now - last_event >= timeout:
                    return "timeout", received
                continue
            last_event = now
            if isinstance(event, Finish):
                if event.reason in ("stop", "length") and (rest := text.finish()):
                    send(rest)
                return event.reason, event.tokens
            received += 1
            piece = text.push(event)
            if piece:
                send(piece)
            if text.stopped:
                return "stop", received

    def _client_gone(self) -> bool:
        """Whether the client closed its side (a readable socket with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # plain replies --------------------------------------------------------------------------

    def _error(self, exc: OpenAIError, record: bool = True) -> None:
        self._json(exc.status, exc.body(), record=record)

    def _json(self, status: int, payload: dict[str, Any], seconds: float | None = None,
              record: bool = True) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 503:
                self.send_header("Retry-After", "1")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            raise ClientGone from None
        if record:
            self.server.app.metrics.response(status, seconds)


def _failure(reason: str) -> OpenAIError:
    """The error reply of a generation that did not end normally."""
    if reason == "timeout":
        return OpenAIError("no new token within the request timeout; the generation was "
                           "cancelled", status=504, kind="server_error", code="timeout")
    if reason == "cancelled":
        return OpenAIError("the server is shutting down; the generation was cancelled",
                           status=503, kind="server_error", code="shutting_down")
    return OpenAIError("the model failed during generation (see the server's log)",
                       status=500, kind="server_error", code="model_error")
