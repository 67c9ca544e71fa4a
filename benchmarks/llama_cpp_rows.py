"""llama.cpp anchor rows of bench_llm_quant.py, run by a Python that has llama-cpp-python (it
compiles llama.cpp from source, so it may live in another virtual environment): the shipped Q4_1
GGUF and its requantizations to Q8_0 and Q4_0; perplexity over given token ids (disjoint windows,
the scoring of slimkit.llm.evaluate), prefill and decode timing. Prints one JSON object.

    python llama_cpp_rows.py GGUF IDS.npy PROMPT.npy --threads 1 --rounds 3 --new 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TYPES = {"Q4_1": None, "Q8_0": 7, "Q4_0": 2}  # llama_ftype: MOSTLY_Q8_0 = 7, MOSTLY_Q4_0 = 2


def requantize(source: str, target: Path, ftype: int, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = threads
    code = llama_cpp.llama_model_quantize(source.encode(), str(target).encode(), params)
    if code != 0:
        raise RuntimeError(f"llama_model_quantize failed ({code})")


def open_model(path: str, threads: int, context: int, logits_all: bool = False):  # noqa: ANN201
    from llama_cpp import Llama

    return Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=context,
                 n_batch=512, logits_all=logits_all, verbose=False)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def perplexity(llm, ids: np.ndarray, window: int) -> float:  # noqa: ANN001
    nll, count = 0.0, 0
    for begin in range(0, len(ids) - 1, window):
        end = min(begin + window, len(ids))
        llm.reset()
        llm.eval(ids[begin:end].tolist())
        logits = np.asarray(llm.scores[:end - begin])
        targets = ids[begin + 1:end]
        nll -= float(np.take_along_axis(log_softmax(logits[:-1]), targets[:, None], -1).sum())
        count += len(targets)
    return float(np.exp(nll / count))


def last_logits(llm) -> np.ndarray:  # noqa: ANN001
    return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))


def timing(llm, prompt: list[int], new: int) -> tuple[float, list[float]]:  # noqa: ANN001
    llm.reset()
    begin = time.perf_counter()
    llm.eval(prompt)
    token = int(np.argmax(last_logits(llm)))
    first = time.perf_counter() - begin
    steps = []
    for _ in range(new - 1):
        t = time.perf_counter()
        llm.eval([token])
        token = int(np.argmax(last_logits(llm)))
        steps.append(time.perf_counter() - t)
    return first, steps


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("ids")
    p.add_argument("prompt")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--window", type=int, default=512)
    args = p.parse_args()
    ids, prompt = np.load(args.ids), np.load(args.prompt).tolist()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, ftype in TYPES.items():
            files[name] = args.gguf if ftype is None else str(Path(tmp) / f"{name}.gguf")
            if ftype is not None:
                requantize(args.gguf, Path(files[name]), ftype, args.threads)
        for name, path in files.items():
            out[name] = {"perplexity": perplexity(open_model(path, args.threads, args.window,
                                                             True), ids, args.window)}
        models = {n: open_model(f, args.threads, 1024) for n, f in files.items()}
        samples = {n: ([], []) for n in models}
        for llm in models.values():
            timing(llm, prompt, 4)
        for _ in range(args.rounds):
            for name, llm in models.items():
                first, steps = timing(llm, prompt, args.new)
                samples[name][0].append(first)
                samples[name][1].extend(steps)
        for name, (firsts, steps) in samples.items():
            out[name].update({"prefill_ms": round(1000 * float(np.median(firsts)), 1),
                              "decode_tok_s": round(1 / float(np.median(steps)), 2)})
    import llama_cpp

    out["version"] = llama_cpp.__version__
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
