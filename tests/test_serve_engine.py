"""The parts under the LLM server: the torch decode engine (sequences join and leave a running
batch), the continuous-batching scheduler, sampling and incremental detokenization."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from slimkit.errors import InputError
from slimkit.llm.sampling import nucleus
from slimkit.serve.llm.continuous import BatchPolicy, ContinuousBatcher, Finish
from slimkit.serve.llm.detokenize import TextStream
from slimkit.serve.llm.engine import DecodeEngine
from slimkit.serve.llm.sampling import SamplingParams, sample
from slimkit.serve.llm.torch_engine import TorchDecodeEngine
from slimkit.testing.tiny_lm import tiny_causal_lm


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm().module


def alone(model, prompt: list[int], n: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy tokens and the logits before each, for ``prompt`` run alone."""
    engine = TorchDecodeEngine(model)
    logits = [engine.prefill({0: prompt})[0]]
    tokens = []
    for _ in range(n):
        tokens.append(int(logits[-1].argmax()))
        logits.append(engine.decode({0: tokens[-1]})[0])
    return tokens, logits[:-1]


def test_sequences_joining_and_leaving_a_running_batch_match_each_run_alone(model):
    prompts = {1: [9, 10, 11, 12, 13, 14, 15], 2: [16, 17], 3: [18, 19, 20, 21],
               4: list(range(3, 23))}  # 4 is longer than the running batch when it joins
    joins = {0: [1], 3: [2, 3], 5: [4]}  # step -> sequences prefilled before it
    n = {1: 6, 2: 10, 3: 8, 4: 5}  # tokens each generates, then it leaves
    engine = TorchDecodeEngine(model)
    assert isinstance(engine, DecodeEngine)
    got: dict[int, list[int]] = {}
    seen: dict[int, list[np.ndarray]] = {}
    last: dict[int, np.ndarray] = {}
    for step in range(20):
        if step in joins:
            ids = joins[step]
            for i, row in zip(ids, engine.prefill({i: prompts[i] for i in ids}), strict=True):
                got[i], seen[i], last[i] = [], [row], row
        for i in [i for i in engine.sequences if len(got[i]) == n[i]]:
            engine.drop(i)
        if not engine.sequences:
            break
        tokens = {i: int(last[i].argmax()) for i in reversed(engine.sequences)}  # any order
        for i, t in tokens.items():
            got[i].append(t)
        for i, row in zip(tokens, engine.decode(tokens), strict=True):
            seen[i].append(row)
            last[i] = row
    assert engine.sequences == () and engine.cached_tokens() == 0
    for i, prompt in prompts.items():
        want_tokens, want_logits = alone(model, prompt, n[i])
        assert got[i] == want_tokens
        for a, b in zip(seen[i], want_logits, strict=False):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_engine_contract_errors(model):
    engine = TorchDecodeEngine(model)
    engine.prefill({1: [5, 6]})
    with pytest.raises(ValueError, match="new ids"):
        engine.prefill({1: [7]})
    with pytest.raises(ValueError, match="one token for each"):
        engine.decode({2: 5})
    engine.drop(99)  # unknown: ignored
    assert engine.sequences == (1,) and engine.cached_tokens() == 2
    with pytest.raises(InputError, match="threads"):
        TorchDecodeEngine(model, threads=0)


class Counting:
    """A scripted DecodeEngine: each sequence's next token is its last token + 1 (mod 10);
    token 9 is the end of sequence. Records its calls."""

    context_length = 32

    def __init__(self) -> None:
        self.held: dict[int, int] = {}  # id -> tokens held
        self.calls: list[tuple[str, int]] = []
        self.fail = False

    @property
    def sequences(self) -> tuple[int, ...]:
        return tuple(self.held)

    def _rows(self, last: list[int]) -> np.ndarray:
        return np.eye(10, dtype=np.float32)[[(t + 1) % 10 for t in last]]

    def prefill(self, prompts):
        self.calls.append(("prefill", len(prompts)))
        if self.fail:
            raise RuntimeError("boom")
        self.held.update({i: len(p) for i, p in prompts.items()})
        return self._rows([p[-1] for p in prompts.values()])

    def decode(self, tokens):
        assert set(tokens) == set(self.held)
        self.calls.append(("decode", len(tokens)))
        for i in tokens:
            self.held[i] += 1
        return self._rows(list(tokens.values()))

    def drop(self, seq_id):
        self.held.pop(seq_id, None)

    def cached_tokens(self) -> int:
        return sum(self.held.values())

    def pinned(self):
        return contextlib.nullcontext()


def events(generation, limit: int = 100) -> list:
    out: list = []
    while len(out) < limit and not isinstance(out[-1:] and out[-1], Finish):
        out.append(generation.next_event(10))
    return out


@contextlib.contextmanager
def running(batcher: ContinuousBatcher):
    batcher.start()
    try:
        yield batcher
    finally:
        batcher.stop(10)


GREEDY = SamplingParams(max_tokens=20, temperature=0, stop_token_ids=(9,))


def test_scheduler_end_of_sequence_length_and_context():
    engine = Counting()
    with running(ContinuousBatcher(engine)) as b:
        assert events(b.submit([4, 5], GREEDY)) == [6, 7, 8, Finish("stop", 4)]
        short = SamplingParams(max_tokens=2, temperature=0, stop_token_ids=(9,))
        assert events(b.submit([0], short)) == [1, 2, Finish("length", 2)]
        nearly_full = [0, 8] * 15 + [0]  # 31 of 32 positions
        assert events(b.submit(nearly_full, GREEDY)) == [1, Finish("length", 1)]
    assert engine.held == {}


def test_prefill_budget_splits_newcomers_and_the_first_is_always_admitted():
    engine = Counting()
    batcher = ContinuousBatcher(engine, BatchPolicy(max_batch=8, max_prefill_tokens=10))
    gens = [batcher.submit([1] * n, GREEDY) for n in (12, 4, 4, 4)]  # queued before start
    with running(batcher):
        for g in gens:
            assert events(g)[-1] == Finish("stop", 8)
    # 12 tokens alone (over the budget), then two of 4 (8 <= 10), then the last one
    assert [n for kind, n in engine.calls if kind == "prefill"] == [1, 2, 1]
    assert max(n for kind, n in engine.calls if kind == "decode") > 1


def test_cancelled_and_failed_generations_free_their_slots():
    engine = Counting()
    batcher = ContinuousBatcher(engine, BatchPolicy(max_batch=1))
    first, waiting = batcher.submit([0], GREEDY), batcher.submit([0], GREEDY)
    waiting.cancel()
    with running(batcher):
        assert events(first)[-1] == Finish("stop", 9)
        assert events(waiting) == [Finish("cancelled", 0)]
        engine.fail = True
        assert events(batcher.submit([0], GREEDY)) == [Finish("error", 0)]
        engine.fail = False
        assert events(batcher.submit([7], GREEDY)) == [8, Finish("stop", 2)]
        snap = batcher.snapshot()
    assert snap["finished_error"] == 1 and snap["finished_cancelled"] == 1
    assert snap["running"] == 0 and engine.held == {}


def test_bad_policy_and_sampling_params():
    with pytest.raises(InputError, match="max_prefill_tokens must be"):
        BatchPolicy(max_prefill_tokens=0)
    with pytest.raises(InputError, match="top_p must be"):
        SamplingParams(top_p=0)
    with pytest.raises(InputError, match="temperature must be"):
        SamplingParams(temperature=-1)


def test_nucleus_is_the_smallest_set_holding_top_p():
    rng = np.random.default_rng(0)
    for size in (5, 300, 2000):  # smaller and larger than the partial-sort candidates
        probs = rng.dirichlet(np.full(size, 0.1))
        for top_p in (0.1, 0.5, 0.9, 0.999):
            tokens, kept = nucleus(probs, top_p)
            order = np.sort(probs)[::-1]
            assert kept.sum() >= top_p - 1e-9 and kept[:-1].sum() < top_p
            np.testing.assert_allclose(kept, order[:tokens.size], rtol=0, atol=0)


def test_sampling_follows_the_distribution_and_its_seed():
    logits = np.log(np.array([0.5, 0.3, 0.2], np.float32))
    params = SamplingParams(seed=3)
    draws = [sample(logits, params, rng) for rng in [params.generator()] for _ in range(4000)]
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 4000, [0.5, 0.3, 0.2],
                               atol=0.03)
    again = params.generator()
    assert [sample(logits, params, again) for _ in range(4000)] == draws
    hot = SamplingParams(temperature=2.0, top_p=0.6, seed=0)
    rng = hot.generator()
    assert {sample(logits, hot, rng) for _ in range(200)} == {0, 1}  # 2 is outside top_p


def byte_level_tokenizer():
    """A byte-level BPE (GPT-2 style), trained here on a few sentences: 'é' and '€' are
    split into bytes that decode alone to replacement characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel
                                  .alphabet(), show_progress=False)
    tok.train_from_iterator(["hello world, the end.", "stop here. go on"] * 3, trainer)

    class Wrapped:
        def encode(self, text: str) -> list[int]:
            return tok.encode(text).ids

        def decode(self, ids, skip_special_tokens=True):
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    return Wrapped()


def test_text_stream_waits_for_whole_characters_and_holds_back_stop_strings():
    tok = byte_level_tokenizer()
    text = "hello café € world. STOP here"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # the accents are several tokens
    stream = TextStream(tok, [], ())
    pieces = [stream.push(t) for t in ids] + [stream.finish()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    stop = TextStream(tok, [], (". ST", "never"))
    out = "".join(stop.push(t) for t in ids) + stop.finish()
    assert out == "hello café € world" and stop.stopped and stop.text == out
