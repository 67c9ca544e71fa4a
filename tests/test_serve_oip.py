"""The Open Inference Protocol v2 of tensor models, tested with the real ``tritonclient[http]``
against the server on loopback: the same outputs as ``/predict``, through the same batcher."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest

from slimkit.serve import InferenceServer, ServeConfig
from slimkit.testing import tiny_model

httpclient = pytest.importorskip("tritonclient.http")
RNG = np.random.default_rng(0)


@pytest.fixture
def server(one_torch_thread):
    config = ServeConfig(port=0, runtime="torch", max_batch=8, max_wait_ms=20)
    with InferenceServer(tiny_model(), config) as srv:
        yield srv


@pytest.fixture
def triton(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=30)
    yield c
    c.close()


def predict(srv: InferenceServer, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    status, data = request(srv, "POST", "/predict",
                           json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}}))
    assert status == 200, data
    return {k: np.asarray(v, np.float32) for k, v in data["outputs"].items()}


def request(srv: InferenceServer, method: str, path: str, body: str | None = None
            ) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_health_and_metadata(server, triton):
    name = server.model.name
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(name)
    assert triton.get_server_metadata()["name"] == "slimkit"
    meta = triton.get_model_metadata(name)
    assert meta["name"] == name and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    assert [o["name"] for o in meta["outputs"]] == ["output"]
    assert triton.get_model_metadata(name, model_version="1")["name"] == name
    assert not triton.is_model_ready("other")


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_gets_the_outputs_of_predict(server, triton, binary):
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    want = predict(server, {"input": x})["output"]
    every = triton.infer(server.model.name, [tensor])  # outputs as binary by default
    asked = triton.infer(server.model.name, [tensor], request_id="r7", outputs=[
        httpclient.InferRequestedOutput("output", binary_data=binary)])
    np.testing.assert_array_equal(every.as_numpy("output"), want)
    np.testing.assert_array_equal(asked.as_numpy("output"), want)
    assert asked.get_response()["id"] == "r7"


def test_json_requests_with_flat_or_nested_data(server):
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    want = predict(server, {"input": x})["output"]
    for data in (x.reshape(-1).tolist(), x.tolist()):
        body = {"inputs": [{"name": "input", "shape": [2, 8], "datatype": "FP32",
                            "data": data}]}
        status, out = request(server, "POST", f"/v2/models/{server.model.name}/infer",
                              json.dumps(body))
        assert status == 200, out
        tensor = out["outputs"][0]
        assert tensor["name"] == "output" and tensor["datatype"] == "FP32"
        got = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
        np.testing.assert_array_equal(got, want)


def test_concurrent_v2_requests_share_batches(server, triton):
    from concurrent.futures import ThreadPoolExecutor

    xs = [RNG.standard_normal((1, 8)).astype(np.float32) for _ in range(12)]

    def infer(x: np.ndarray) -> np.ndarray:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=30)
        try:
            t = httpclient.InferInput("input", [1, 8], "FP32")
            t.set_data_from_numpy(x)
            return c.infer(server.model.name, [t]).as_numpy("output")
        finally:
            c.close()

    with ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(infer, xs))
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_allclose(out, predict(server, {"input": x})["output"], atol=1e-6)
    assert max(int(k) for k in server.metrics.snapshot()["batch_sizes"]) > 1


def infer_body(name: str = "input", shape=(1, 8), datatype: str = "FP32", data=None) -> dict:
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype,
                        "data": [0.5] * 8 if data is None else data}]}


@pytest.mark.parametrize("body,status,message", [
    (infer_body(shape=(1, 7), data=[0.5] * 7), 400, r"must have shape \[N, 8\]"),
    (infer_body(data=[0.5] * 7), 400, "7 values do not fill shape"),
    (infer_body(name="x"), 400, "tensor named one of"),
    (infer_body(datatype="BYTES"), 400, "datatype must be one of"),
    (infer_body(data=["a"] * 8), 400, "data must be FP32 numbers"),
    ({"inputs": "nope"}, 400, '"inputs": \\[tensors\\]'),
    ({**infer_body(), "outputs": [{"name": "nope"}]}, 400, "outputs must name"),
])
def test_bad_v2_requests_get_400_and_the_server_keeps_serving(server, triton, body, status,
                                                              message):
    import re

    got, out = request(server, "POST", f"/v2/models/{server.model.name}/infer",
                       json.dumps(body))
    assert got == status and re.search(message, out["error"]), out
    x = RNG.standard_normal((1, 8)).astype(np.float32)
    tensor = httpclient.InferInput("input", [1, 8], "FP32")
    tensor.set_data_from_numpy(x)
    np.testing.assert_array_equal(triton.infer(server.model.name, [tensor]).as_numpy("output"),
                                  predict(server, {"input": x})["output"])


def test_unknown_models_routes_and_bad_binary_sizes(server, triton):
    assert request(server, "POST", "/v2/models/other/infer", json.dumps(infer_body()))[0] == 404
    assert request(server, "GET", "/v2/models/other")[0] == 404
    assert request(server, "GET", f"/v2/models/{server.model.name}/versions/2")[0] == 404
    assert request(server, "GET", "/v2/nope")[0] == 404
    x = RNG.standard_normal((1, 8)).astype(np.float32)
    for claimed, sent in ((16, 16), (32, 16), (32, 40)):  # sizes of a [1, 8] FP32 tensor: 32
        head = json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                                       "parameters": {"binary_data_size": claimed}}]}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("POST", f"/v2/models/{server.model.name}/infer",
                         head + x.tobytes()[:sent] + b"\0" * max(sent - 32, 0),
                         {"Inference-Header-Content-Length": str(len(head))})
            response = conn.getresponse()
            status, out = response.status, json.loads(response.read())
        finally:
            conn.close()
        assert status == 400 and ("binary_data_size must be 32" in out["error"] or
                                  "not claimed" in out["error"]), out


def test_a_text_model_with_integer_inputs(one_torch_thread):
    transformers = pytest.importorskip("transformers")
    from test_serve import bert_model, text_request

    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=64)
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    with InferenceServer(bert_model(bert), ServeConfig(port=0, runtime="torch")) as srv:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}", network_timeout=30)
        try:
            r = text_request(6, 0)
            tensors = []
            for name, value in r.items():
                t = httpclient.InferInput(name, list(value.shape), "INT64")
                t.set_data_from_numpy(value.astype(np.int64))
                tensors.append(t)
            got = c.infer(srv.model.name, tensors).as_numpy("embedding")
        finally:
            c.close()
        np.testing.assert_allclose(got, predict(srv, r)["embedding"], rtol=1e-5, atol=1e-6)
