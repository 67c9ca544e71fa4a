"""slimkit serve on loopback with a real HTTP client: batching, bad input, limits, shutdown."""

from __future__ import annotations

import contextlib
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
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec
from slimkit.runtime import create_session
from slimkit.serve import Batcher, InferenceServer, Metrics, ServeConfig
from slimkit.serve.padding import plan_padding
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


def metrics_after(server: InferenceServer, responses: int) -> tuple[int, dict]:
    """GET /metrics once ``responses`` replies are counted (a reply is counted just after it
    is sent, so the client may read it a moment before)."""
    deadline = time.monotonic() + 10
    while sum(server.metrics.snapshot()["responses"].values()) < responses \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    return get(server, "/metrics")


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


def test_npz_reply_when_the_client_accepts_it(server):
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/predict", npz_body({"input": x}),
                     {"Content-Type": "application/x-npz", "Accept": "application/x-npz"})
        response = conn.getresponse()
        kind, body = response.getheader("Content-Type"), response.read()
    finally:
        conn.close()
    assert response.status == 200 and kind == "application/x-npz"
    with np.load(io.BytesIO(body), allow_pickle=False) as out:
        assert out.files == ["output"]
        np.testing.assert_allclose(out["output"], expected(x), atol=1e-6)
    status, data = post(server, b"{}", "application/json")  # errors stay JSON
    assert status == 400 and "error" in data


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
    status, m = metrics_after(server, 1)
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
    m = metrics_after(server, 160)[1]
    assert m["responses"] == {"200": 160} and m["queue_depth"] == 0


def test_bad_config():
    with pytest.raises(InputError, match="max_batch must be"):
        ServeConfig(max_batch=0)
    with pytest.raises(InputError, match=r"max_padding must be in \[0, 1\)"):
        ServeConfig(max_padding=1.0)


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


# sequence models: padding requests of different lengths into one batch ---------------------

VOCAB = 50
TEXT_INPUTS = tuple(TensorSpec(n, (DYNAMIC_BATCH, "sequence"), "int64", VOCAB if i == 0 else None)
                    for i, n in enumerate(("input_ids", "attention_mask", "token_type_ids")))


class Tokens(torch.nn.Module):
    """A BERT encoder returning its last hidden state (one vector per token)."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


class MaskIgnored(torch.nn.Module):
    """Takes an attention mask but averages over every position, padding included."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 4)

    def forward(self, input_ids, attention_mask):
        return self.embed(input_ids).mean(1)


@pytest.fixture(scope="module")
def tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=64, attn_implementation="eager")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return transformers.BertModel(config, add_pooling_layer=False).eval()


def bert_model(bert, per_token: bool = False) -> Model:
    from slimkit.load.hf import MeanPooledEncoder

    module = Tokens(bert) if per_token else MeanPooledEncoder(bert)
    return Model(name="tiny-bert", source="test", module=module.eval(), inputs=TEXT_INPUTS,
                 output_names=("hidden" if per_token else "embedding",), task=Task.EMBEDDING)


def text_request(length: int, seed: int, examples: int = 1) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(1, VOCAB, (examples, length))
    return {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids)}


class Gated:
    """A session whose batcher thread starts taking requests only once ``gate`` is set."""

    def __init__(self, inner, gate: threading.Event) -> None:
        self.inner, self.gate = inner, gate
        self.runtime, self.options = inner.runtime, inner.options

    def run(self, inputs):
        return self.inner.run(inputs)

    @contextlib.contextmanager
    def pinned(self):
        self.gate.wait(30)
        with self.inner.pinned():
            yield

    def close(self) -> None:
        self.inner.close()


def run_batched(model: Model, requests: list[dict[str, np.ndarray]], max_padding: float,
                max_batch: int = 16
                ) -> tuple[list[list[np.ndarray]], Metrics, list[list[np.ndarray]]]:
    """Outputs of ``requests`` all queued before the batcher takes any, the metrics, and the
    outputs of each request run alone."""
    session = create_session(model, "torch")
    metrics, gate = Metrics(), threading.Event()
    batcher = Batcher(Gated(session, gate), max_batch, 500.0, 64, metrics,
                      plan_padding(model, session, max_padding))
    batcher.start()
    try:
        futures = [batcher.submit(r) for r in requests]
        gate.set()
        outs = [f.result(timeout=30) for f in futures]
    finally:
        batcher.stop()
    with session.pinned():
        alone = [session.run(r) for r in requests]
    return outs, metrics, alone


@pytest.mark.parametrize("per_token", [False, True])
def test_padded_batch_equals_unpadded_runs(one_torch_thread, tiny_bert, per_token):
    model = bert_model(tiny_bert, per_token)
    plan = plan_padding(model, create_session(model, "torch"), 0.5)
    assert plan is not None and plan.outputs == (((1,),) if per_token else ((),))
    requests = [text_request(n, seed, examples) for seed, (n, examples) in
                enumerate([(5, 1), (7, 2), (6, 1), (8, 1), (7, 1)])]
    outs, metrics, alone = run_batched(model, requests, max_padding=0.5)
    for (got,), (want,) in zip(outs, alone, strict=True):
        assert got.shape == want.shape  # per-token outputs cut back to the request's length
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    snap = metrics.snapshot()
    assert snap["batch_sizes"] == {"6": 1}  # one forward pass for all five requests
    assert snap["padding_fraction"] == pytest.approx(1 - 40 / 48, abs=1e-4)


def test_padding_limit_holds_long_requests_for_the_next_batch(one_torch_thread, tiny_bert):
    model = bert_model(tiny_bert)
    requests = [text_request(n, seed) for seed, n in enumerate([4, 4, 16, 4, 15])]
    outs, metrics, alone = run_batched(model, requests, max_padding=0.25)
    for (got,), (want,) in zip(outs, alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert metrics.snapshot()["batch_sizes"] == {"2": 1, "3": 1}  # [4, 4, 4] then [16, 15]


def test_a_batch_takes_the_lengths_closest_to_the_oldest_request(one_torch_thread, tiny_bert):
    model = bert_model(tiny_bert)
    requests = [text_request(n, seed) for seed, n in enumerate([8, 4, 9])]
    outs, metrics, alone = run_batched(model, requests, max_padding=0.25, max_batch=2)
    for (got,), (want,) in zip(outs, alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # [8, 9] then [4]: 1 padded position of 22 (in arrival order, [8, 4] then [9]: 4 of 25)
    assert metrics.snapshot()["padding_fraction"] == pytest.approx(1 / 22, abs=1e-4)


def test_a_batch_does_not_wait_while_requests_of_another_shape_wait(one_torch_thread, tiny_bert):
    session = create_session(bert_model(tiny_bert), "torch")
    gate = threading.Event()
    batcher = Batcher(Gated(session, gate), 16, 60_000.0, 64, Metrics())  # exact lengths only
    batcher.start()
    try:
        first, second = (batcher.submit(text_request(n, n)) for n in (4, 5))
        gate.set()
        assert first.result(timeout=10)[0].shape == (1, 32)  # ran without the 60 s wait
    finally:
        batcher.stop()  # ends the wait of the last batch, which nothing else could join
    assert second.result(timeout=10)[0].shape == (1, 32)


def test_requests_held_back_count_against_the_queue_bound(one_torch_thread, tiny_bert):
    from slimkit.serve.batcher import QueueFull

    class Stalled(Gated):
        """Forward passes wait for ``stall`` (taking requests waits for ``gate``)."""

        stall = threading.Event()

        def run(self, inputs):
            self.stall.wait(30)
            return self.inner.run(inputs)

    gate = threading.Event()
    batcher = Batcher(Stalled(create_session(bert_model(tiny_bert), "torch"), gate), 16, 0.0,
                      3, Metrics())  # exact lengths only
    try:
        batcher.start()
        futures = [batcher.submit(text_request(n, i)) for i, n in enumerate((4, 5, 4))]
        gate.set()
        deadline = time.monotonic() + 10
        while batcher.depth != 1 and time.monotonic() < deadline:  # [4, 4] runs, 5 is held
            time.sleep(0.01)
        futures += [batcher.submit(text_request(6, i)) for i in (7, 8)]  # 2 queued + 1 held
        with pytest.raises(QueueFull):
            batcher.submit(text_request(6, 9))
    finally:
        Stalled.stall.set()
        batcher.stop()
    assert [f.result(timeout=10)[0].shape for f in futures] == [(1, 32)] * 5


def test_without_padding_only_equal_lengths_batch(one_torch_thread, tiny_bert):
    model = bert_model(tiny_bert)
    assert plan_padding(model, create_session(model, "torch"), 0.0) is None
    requests = [text_request(n, seed) for seed, n in enumerate([4, 5, 4, 5])]
    outs, metrics, alone = run_batched(model, requests, max_padding=0.0)
    for (got,), (want,) in zip(outs, alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert metrics.snapshot()["batch_sizes"] == {"2": 2}


def test_a_model_that_ignores_its_mask_is_not_padded(one_torch_thread, caplog):
    model = Model(name="mask-ignored", source="test", module=MaskIgnored().eval(),
                  inputs=TEXT_INPUTS[:2], output_names=("embedding",))
    with caplog.at_level("WARNING", logger="slimkit.serve.padding"):
        assert plan_padding(model, create_session(model, "torch"), 0.25) is None
    assert "change when its inputs are padded" in caplog.text
    assert plan_padding(tiny_model(), create_session(tiny_model(), "torch"), 0.25) is None


@pytest.fixture
def bert_server(one_torch_thread, tiny_bert):
    config = ServeConfig(port=0, runtime="torch", max_batch=16, max_wait_ms=50,
                         max_body_bytes=4096, max_padding=0.25)
    with InferenceServer(bert_model(tiny_bert), config) as srv:
        yield srv


def npz_body(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def test_text_requests_over_http_json_and_npz(bert_server):
    reference = create_session(bert_server.model, "torch")
    requests = [text_request(n, seed) for seed, n in enumerate([3, 9, 6, 6, 11, 4, 7, 8])]

    def send(i: int) -> np.ndarray:
        r = requests[i]
        body, kind = (npz_body(r), "application/x-npz") if i % 2 else \
            (json.dumps({"inputs": {k: v.tolist() for k, v in r.items()}}).encode(),
             "application/json")
        status, data = post(bert_server, body, kind)
        assert status == 200, data
        return np.asarray(data["outputs"]["embedding"], np.float32)

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(send, range(len(requests))))
    for r, out in zip(requests, outs, strict=True):
        np.testing.assert_allclose(out, reference.run(r)[0], rtol=1e-5, atol=1e-5)
    m = metrics_after(bert_server, 8)[1]
    assert m["padded_inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert m["responses"] == {"200": 8} and 0 <= m["padding_fraction"] <= 0.25


@pytest.mark.parametrize("body,message", [
    (lambda: json.dumps({"inputs": {**{k: v.tolist() for k, v in text_request(5, 0).items()},
                                    "attention_mask": [[1] * 6]}}).encode(),
     "share axis 'sequence' but have sizes 5 and 6"),
    (lambda: npz_body({"input_ids": np.zeros((1, 3), np.int64)}),
     r"missing \['attention_mask', 'token_type_ids'\]"),
    (lambda: npz_body({**text_request(2, 0), "input_ids": np.array([[{"a": 1}]], object)}),
     "pickled objects are refused"),
    (lambda: npz_body({k: np.zeros((64, 64), np.int64) for k in text_request(1, 0)},
                      compressed=True), "unpacks to .* over the 4096 byte limit"),
    (lambda: b"PK not a zip", "not an .npz archive"),
])
def test_bad_text_requests_get_400(bert_server, body, message):
    import re

    kind = "application/json" if body().startswith(b"{") else "application/x-npz"
    status, data = post(bert_server, body(), kind)
    assert status == 400 and re.search(message, data["error"]), data
    assert post(bert_server, npz_body(text_request(4, 1)), "application/x-npz")[0] == 200


@pytest.mark.slow
def test_minilm_padded_batches_match_unpadded_onnxruntime(minilm):
    config = ServeConfig(port=0, max_batch=16, max_wait_ms=200, max_padding=0.5)
    texts = ["how do I reset my password", "cheap flights to lisbon", "weather tomorrow",
             "symptoms of vitamin d deficiency in adults", "python list comprehension"]
    encoded = [dict(minilm.tokenizer([t], return_tensors="np")) for t in texts]
    with InferenceServer(minilm, config) as srv, ThreadPoolExecutor(5) as pool:
        outs = list(pool.map(lambda e: post(srv, npz_body(e), "application/x-npz"), encoded))
        sizes = srv.metrics.snapshot()["batch_sizes"]
        for e, (status, data) in zip(encoded, outs, strict=True):
            assert status == 200, data
            want = srv.session.run({k: v.astype(np.int64) for k, v in e.items()})[0]
            np.testing.assert_allclose(data["outputs"]["embedding"], want, rtol=1e-4, atol=1e-5)
    assert max(int(k) for k in sizes) > 1
