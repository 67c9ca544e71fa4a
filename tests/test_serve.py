"""slimkit serve on loopback with a real HTTP client: batching, bad input, limits, shutdown."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from slimkit.errors import InputError
from slimkit.model import Model, TensorSpec
from slimkit.serve import InferenceServer, ServeConfig
from slimkit.testing import tiny_mlp, tiny_model

RNG = np.random.default_rng(0)


class Slow(torch.nn.Module):
    """The tiny MLP, taking ``delay`` seconds per forward pass (a stand-in for a big model)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.inner, self.delay = tiny_mlp(), delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.inner(x)


def slow_model(delay: float) -> Model:
    return Model(name="slow", source="test", module=Slow(delay),
                 inputs=(TensorSpec("input", ("batch", 8)),))


def expected(x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return tiny_mlp()(torch.from_numpy(x)).numpy()


def post(server: InferenceServer, body: bytes, content_type: str = "application/json",
         path: str = "/predict") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def get(server: InferenceServer, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def predict(server: InferenceServer, x: np.ndarray) -> np.ndarray:
    status, data = post(server, json.dumps({"inputs": x.tolist()}).encode())
    assert status == 200, data
    return np.asarray(data["outputs"]["output"], dtype=np.float32)


@pytest.fixture
def server(one_torch_thread):
    config = ServeConfig(port=0, runtime="torch", max_batch=8, max_wait_ms=20,
                         max_body_bytes=4096)
    with InferenceServer(tiny_model(), config) as srv:
        yield srv


def test_json_and_npy_requests_match_the_model(server):
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(predict(server, x), expected(x), atol=1e-6)
    buf = io.BytesIO()
    np.save(buf, x)
    status, data = post(server, buf.getvalue(), "application/x-npy")
    assert status == 200
    np.testing.assert_allclose(np.asarray(data["outputs"]["output"]), expected(x), atol=1e-6)


@pytest.mark.parametrize("body,message", [
    ({"inputs": [[1.0] * 7]}, r"must have shape \[N, 8\].*got \[1, 7\]"),
    ({"inputs": [1.0] * 8}, r"must have shape \[N, 8\]"),
    ({"inputs": [["a"] * 8]}, "must be numbers"),
    ({"inputs": [[1.0] * 8, [1.0] * 7]}, "non-ragged"),
    ({"inputs": {"x": [[1.0] * 8]}}, r"missing \['input'\], unknown \['x'\]"),
    ({"data": []}, "must be a JSON object"),
])
def test_bad_requests_get_400_and_the_server_keeps_serving(server, body, message):
    import re

    status, data = post(server, json.dumps(body).encode())
    assert status == 400 and re.search(message, data["error"]), data
    x = RNG.standard_normal((1, 8)).astype(np.float32)
    np.testing.assert_allclose(predict(server, x), expected(x), atol=1e-6)


def test_pickled_npy_is_refused(server):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    status, data = post(server, buf.getvalue(), "application/x-npy")
    assert status == 400 and "pickled objects are refused" in data["error"]


def test_limits_routes_and_lengths(server):
    status, data = post(server, json.dumps({"inputs": [[0.5] * 8] * 200}).encode())
    assert status == 413 and "over the 4096 byte limit" in data["error"]
    assert post(server, b"{}", path="/nope")[0] == 404
    assert get(server, "/nope")[0] == 404
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.0\r\n\r\n")
        assert b" 411 " in s.recv(1024)


def test_client_disconnect_mid_body(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.0\r\nContent-Length: 1000\r\n\r\n{\"inputs\": ")
    deadline = time.monotonic() + 10
    while server.metrics.snapshot()["client_disconnects"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.metrics.snapshot()["client_disconnects"] == 1
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    np.testing.assert_allclose(predict(server, x), expected(x), atol=1e-6)


def test_keep_alive_serves_many_requests_on_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for n in (1, 2, 3):
            x = RNG.standard_normal((n, 8)).astype(np.float32)
            conn.request("POST", "/predict", json.dumps({"inputs": x.tolist()}))
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Connection") != "close"
            out = np.asarray(json.loads(response.read())["outputs"]["output"], np.float32)
            np.testing.assert_allclose(out, expected(x), atol=1e-6)
    finally:
        conn.close()


def test_health_and_metrics(server):
    assert get(server, "/health") == (200, {"status": "ok", "model": "tiny-mlp",
                                            "runtime": "torch", "queue": 0})
    predict(server, RNG.standard_normal((2, 8)).astype(np.float32))
    status, m = get(server, "/metrics")
    assert status == 200 and m["requests"] == 1 and m["responses"] == {"200": 1}
    assert m["batch_sizes"] == {"2": 1} and m["latency_ms"]["count"] == 1
    assert m["latency_ms"]["p50"] <= m["latency_ms"]["p99"] and m["max_batch"] == 8


def test_concurrent_requests_are_batched_and_answered_in_kind():
    config = ServeConfig(port=0, runtime="torch", max_batch=16, max_wait_ms=50)
    xs = [RNG.standard_normal((1 + i % 3, 8)).astype(np.float32) for i in range(12)]
    with InferenceServer(slow_model(0.05), config) as srv, ThreadPoolExecutor(12) as pool:
        outs = list(pool.map(lambda x: predict(srv, x), xs))
        sizes = srv.metrics.snapshot()["batch_sizes"]
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_allclose(out, expected(x), atol=1e-6)
    assert max(int(k) for k in sizes) > 3  # requests shared forward passes
    assert sum(int(k) * v for k, v in sizes.items()) == sum(len(x) for x in xs)


def test_full_queue_gives_503():
    config = ServeConfig(port=0, runtime="torch", max_batch=1, max_queue=1)
    x = json.dumps({"inputs": [[0.0] * 8]}).encode()
    with InferenceServer(slow_model(0.3), config) as srv, ThreadPoolExecutor(6) as pool:
        statuses = sorted(s for s, _ in pool.map(lambda _: post(srv, x), range(6)))
    assert statuses[0] == 200 and 503 in statuses  # one running, one queued, the rest refused


def test_graceful_stop_finishes_requests_in_flight():
    srv = InferenceServer(slow_model(0.4), ServeConfig(port=0, runtime="torch")).start()
    x = RNG.standard_normal((1, 8)).astype(np.float32)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(predict, srv, x) for _ in range(3)]
        time.sleep(0.15)  # the requests are in flight
        srv.stop()
        for f in futures:
            np.testing.assert_allclose(f.result(), expected(x), atol=1e-6)
    with pytest.raises(OSError):
        get(srv, "/health")


def test_bounded_load(server):
    xs = [RNG.standard_normal((1, 8)).astype(np.float32) for _ in range(160)]
    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda x: predict(server, x), xs))
    assert time.monotonic() - start < 60
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_allclose(out, expected(x), atol=1e-6)
    m = get(server, "/metrics")[1]
    assert m["responses"] == {"200": 160} and m["queue_depth"] == 0


def test_bad_config():
    with pytest.raises(InputError, match="max_batch must be"):
        ServeConfig(max_batch=0)


def test_sigterm_stops_gracefully_in_process():
    srv = InferenceServer(slow_model(0.3), ServeConfig(port=0, runtime="torch"))
    x = RNG.standard_normal((1, 8)).astype(np.float32)
    results = []

    def client() -> None:
        while srv._thread is None:
            time.sleep(0.01)
        sender = threading.Thread(target=lambda: results.append(predict(srv, x)))
        sender.start()
        time.sleep(0.1)  # the request is in flight
        os.kill(os.getpid(), signal.SIGTERM)
        sender.join()

    threading.Thread(target=client).start()
    before = signal.getsignal(signal.SIGTERM)
    srv.serve_until_signal()  # returns once SIGTERM came and the request was answered
    assert signal.getsignal(signal.SIGTERM) is before
    deadline = time.monotonic() + 10
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    np.testing.assert_allclose(results[0], expected(x), atol=1e-6)


@pytest.mark.slow
def test_cli_serve_stops_on_sigterm(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "slimkit", "serve", "slimkit.testing:tiny_mlp",
         "--input-shape", "1x8", "--port", "0", "--runtime", "torch"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving tiny_mlp on http://127.0.0.1:" in line, proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/predict", json.dumps({"inputs": [[0.0] * 8]}))
        assert conn.getresponse().status == 200
        threading.Timer(0.0, proc.send_signal, (signal.SIGTERM,)).start()
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
