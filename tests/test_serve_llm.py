"""slimkit serve of a causal LM: OpenAI's API on loopback, tested with the real ``openai``
client, continuous batching, bad input and clients that go away."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from slimkit.serve.llm.config import LLMServeConfig
from slimkit.serve.llm.server import LLMServer
from slimkit.serve.llm.torch_engine import TorchDecodeEngine
from slimkit.testing.tiny_lm import tiny_causal_lm

openai = pytest.importorskip("openai")
MODEL = "tiny-llama"
CHAT = [{"role": "user", "content": "what is the capital of france ?"}]


class SlowEngine(TorchDecodeEngine):
    """The torch engine, ``delay`` seconds longer per decode step (a stand-in for a big model,
    so that concurrent requests overlap)."""

    delay = 0.0

    def decode(self, tokens):
        time.sleep(self.delay)
        return super().decode(tokens)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield  # the reference generations; the engine pins its own threads


@pytest.fixture(scope="module")
def lm():
    return tiny_causal_lm()


def make_server(lm, delay: float = 0.0, **config) -> LLMServer:
    engine = SlowEngine(lm.module, 1, lm.tokenizer.pad_token_id)
    engine.delay = delay
    options = {"port": 0, "max_batch": 4, "request_timeout_s": 20.0, **config}
    return LLMServer(engine, lm.tokenizer, LLMServeConfig(**options), lm.name, lm.eos_token_ids)


@pytest.fixture
def server(lm):
    with make_server(lm) as srv:
        yield srv


def client(srv: LLMServer):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def reference(lm, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens of transformers' own generate (the end-of-sequence token left out)."""
    import torch

    with torch.inference_mode():
        out = lm.module.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                                 eos_token_id=lm.eos_token_ids[0],
                                 pad_token_id=lm.tokenizer.pad_token_id)
    return [t for t in out[0, len(prompt):].tolist() if t not in lm.eos_token_ids]


def words(text: str) -> list[str]:
    return text.split()


def chat_ids(lm) -> list[int]:
    text = lm.tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_openai_client_streams_a_chat_completion(lm, server):
    stream = client(server).chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    want = reference(lm, chat_ids(lm), 12)
    assert words(text) == words(lm.tokenizer.decode(want, skip_special_tokens=True))
    assert finals[-1] in ("length", "stop") and set(finals[:-1]) == {None}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.prompt_tokens == len(chat_ids(lm))
    assert usage.completion_tokens == 12 if finals[-1] == "length" else usage.completion_tokens < 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_completion_streamed_and_whole_agree_with_generate(lm, server):
    c = client(server)
    prompt = "the capital of france"
    whole = c.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True))
    ids = lm.tokenizer(prompt)["input_ids"]
    assert whole.choices[0].text == streamed
    assert words(streamed) == words(lm.tokenizer.decode(reference(lm, ids, 10),
                                                        skip_special_tokens=True))
    assert whole.usage.prompt_tokens == len(ids) and whole.object == "text_completion"
    by_ids = c.completions.create(model=MODEL, prompt=ids, max_tokens=10, temperature=0)
    assert by_ids.choices[0].text == streamed


def test_concurrent_generations_share_decode_steps_and_match_alone(lm):
    prompts = ["the capital of france", "hello , how are you", "a small model",
               "tell me a story about a cat and a dog", "what is"]
    lengths = [14, 6, 11, 9, 16]
    with make_server(lm, delay=0.02) as srv, ThreadPoolExecutor(5) as pool:
        c = client(srv)
        texts = list(pool.map(lambda pn: c.completions.create(
            model=MODEL, prompt=pn[0], max_tokens=pn[1], temperature=0).choices[0].text,
            zip(prompts, lengths, strict=True)))
        m = srv.snapshot()
    for prompt, n, text in zip(prompts, lengths, texts, strict=True):
        want = reference(lm, lm.tokenizer(prompt)["input_ids"], n)
        assert words(text) == words(lm.tokenizer.decode(want, skip_special_tokens=True))
    assert max(int(k) for k in m["batch_sizes"]) == 4  # max_batch: sequences shared steps
    assert m["running"] == 0 and m["cached_tokens"] == 0 and m["finished_length"] == 5


def test_sampling_with_a_seed_is_repeatable(server):
    c = client(server)

    def once(seed: int) -> str:
        return c.completions.create(model=MODEL, prompt="hello", max_tokens=12, temperature=1.0,
                                    top_p=0.9, seed=seed).choices[0].text

    assert once(5) == once(5)
    assert len({once(s) for s in range(4)}) > 1  # sampling, not greedy


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_end_the_text_before_them(server, stream):
    c = client(server)
    full = c.completions.create(model=MODEL, prompt="tell me a story", max_tokens=16,
                                temperature=0).choices[0].text
    stop = " ".join(words(full)[2:4])  # two words from inside the text
    kwargs = {"model": MODEL, "prompt": "tell me a story", "max_tokens": 16, "temperature": 0,
              "stop": [stop, "never-seen"]}
    if stream:
        chunks = list(c.completions.create(stream=True, **kwargs))
        text, reason = "".join(ch.choices[0].text for ch in chunks), chunks[-1].choices[0]
        reason = reason.finish_reason
    else:
        choice = c.completions.create(**kwargs).choices[0]
        text, reason = choice.text, choice.finish_reason
    assert text == full[:full.index(stop)] and reason == "stop"
    assert server.snapshot()["running"] == 0


def test_models_health_and_metrics(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == [MODEL] and models.data[0].owned_by == "slimkit"
    assert get(server, "/v1/models/" + MODEL)[1]["id"] == MODEL
    assert get(server, "/health") == (200, {"status": "ok", "model": MODEL, "running": 0})
    status, m = get(server, "/metrics")
    assert status == 200 and m["max_batch"] == 4 and m["ttft_ms"]["count"] == 0
    status, body = get(server, "/v1/nope")
    assert status == 404 and body["error"]["code"] == "not_found"


def get(srv: LLMServer, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def post(srv: LLMServer, path: str, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


CHAT_PATH, TEXT_PATH = "/v1/chat/completions", "/v1/completions"


@pytest.mark.parametrize("path,body,status,param,message", [
    (CHAT_PATH, {"model": MODEL}, 400, "messages", "'messages' is a required property"),
    (CHAT_PATH, {"model": MODEL, "messages": []}, 400, "messages", "non-empty list"),
    (CHAT_PATH, {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400,
     "messages[0]", "role among"),
    (CHAT_PATH, {"model": MODEL, "messages": CHAT, "n": 2}, 400, "n", "not supported"),
    (CHAT_PATH, {"model": MODEL, "messages": CHAT, "temperature": 3}, 400, "temperature",
     r"in \[0, 2\]"),
    (CHAT_PATH, {"model": MODEL, "messages": CHAT, "max_tokens": 0}, 400, "max_tokens",
     "integer >= 1"),
    (CHAT_PATH, {"model": MODEL, "messages": CHAT, "bogus": 1}, 400, "bogus",
     "Unrecognized request argument supplied: bogus"),
    (CHAT_PATH, {"model": MODEL, "messages": CHAT, "stop": ["a"] * 5}, 400, "stop",
     "at most 4 strings"),
    (CHAT_PATH, {"model": "gpt-4", "messages": CHAT}, 404, "model", "does not exist"),
    (TEXT_PATH, {"model": MODEL, "prompt": ["a", "b"]}, 400, "prompt", "one prompt"),
    (TEXT_PATH, {"model": MODEL, "prompt": [1, 10**6]}, 400, "prompt", "vocabulary size"),
    (TEXT_PATH, {"model": MODEL, "prompt": "hi", "stream_options": {"include_usage": True}},
     400, "stream_options", "only with stream"),
])
def test_malformed_requests_get_openai_errors_and_the_server_keeps_serving(
        server, path, body, status, param, message):
    got, data = post(server, path, json.dumps(body).encode())
    assert got == status and set(data["error"]) == {"message", "type", "param", "code"}, data
    assert data["error"]["param"] == param and re.search(message, data["error"]["message"])
    assert post(server, TEXT_PATH, b"{not json")[1]["error"]["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument"):
        client(server).completions.create(model=MODEL, prompt="hi", extra_body={"bogus": 1})
    ok = client(server).completions.create(model=MODEL, prompt="hi", max_tokens=2)
    assert ok.usage.completion_tokens <= 2


def test_a_prompt_longer_than_the_context_is_refused_or_truncated(server):
    c = client(server)
    long = " ".join(["the"] * 70)  # 70 tokens; the context is 64
    with pytest.raises(openai.BadRequestError) as caught:
        c.completions.create(model=MODEL, prompt=long, max_tokens=4)
    error = caught.value.body
    assert error["code"] == "context_length_exceeded" and "maximum context length is 64 " \
        "tokens" in error["message"] and "(70 in the prompt, 4 in the completion)" in \
        error["message"]
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": long}])
    cut = c.completions.create(model=MODEL, prompt=long, max_tokens=4,
                               extra_body={"truncate_prompt_tokens": 32})
    assert cut.usage.prompt_tokens == 32 and cut.usage.completion_tokens <= 4


def test_a_chat_request_to_a_model_without_a_chat_template(lm):
    plain = tiny_causal_lm(chat_template=False)
    with LLMServer.for_torch(plain, LLMServeConfig(port=0)) as srv:
        c = client(srv)
        with pytest.raises(openai.BadRequestError) as caught:
            c.chat.completions.create(model=MODEL, messages=CHAT)
        assert caught.value.body["code"] == "chat_template_missing"
        assert "no chat template" in caught.value.body["message"]
        assert c.completions.create(model=MODEL, prompt="hello", max_tokens=3).choices


def wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_frees_its_slot_and_cache(stream):
    # 200 tokens at 30 ms each (a context of 256): a generation a busy machine cannot finish
    # before the disconnect is seen; 60 in a context of 64 sometimes finished first
    lm = tiny_causal_lm(context=256)
    request = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 200,
                          "stream": stream}).encode()
    with make_server(lm, delay=0.03) as srv:
        before = set(threading.enumerate())
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(request), request))
            if stream:  # read until the stream has begun
                seen = b""
                while b"data: " not in seen and (part := s.recv(4096)):
                    seen += part
                assert b"data: " in seen
            assert wait_until(lambda: srv.snapshot()["running"] == 1)
        assert wait_until(lambda: srv.snapshot()["finished_cancelled"] == 1)
        assert wait_until(lambda: srv.in_flight == 0 and set(threading.enumerate()) <= before)
        m = srv.snapshot()
        assert m["running"] == 0 and m["cached_tokens"] == 0 and m["client_disconnects"] == 1
        assert srv.engine.sequences == () and srv.engine.cached_tokens() == 0
        assert m["generated_tokens"] < 200  # the generation stopped early
        ok = client(srv).completions.create(model=MODEL, prompt="hello", max_tokens=3)
        assert ok.choices[0].finish_reason in ("length", "stop")


def test_a_full_queue_gives_503(lm):
    body = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 8}).encode()
    with make_server(lm, delay=0.05, max_batch=1, max_queue=1) as srv, \
            ThreadPoolExecutor(4) as pool:
        statuses = sorted(s for s, _ in pool.map(lambda _: post(srv, TEXT_PATH, body), range(4)))
    assert statuses[0] == 200 and 503 in statuses
