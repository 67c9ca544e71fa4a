"""Data-parallel execution (slimkit.parallel): outputs equal the single-process run, in input
order; in-flight work stays bounded; a worker's exception, crash or hang surfaces as an error
naming the worker and the shard, within seconds, with no worker process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from slimkit.data import Dataset
from slimkit.errors import InputError, ModelLoadError
from slimkit.export.sessions import session_for
from slimkit.load import load_model
from slimkit.parallel import (
    AdvancedParallelOptions,
    DataParallel,
    InOrder,
    ModelSpec,
    OversubscriptionWarning,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
    available_cores,
    merge,
    split,
)
from slimkit.parallel.assign import check_fingerprints, core_plan
from slimkit.parallel.spec import prepare, weights_fingerprint
from slimkit.runtime import RuntimeOptions
from slimkit.testing import assert_close_to_reference, tiny_mlp

MLP = "slimkit.testing:tiny_mlp"
CNN = ModelSpec("slimkit.testing:tiny_cnn", input_shape=(1, 3, 8, 8))
SCRIPTED = f"{Path(__file__).resolve()}:scripted_mlp"
SLOW, EXIT, HANG = 444.0, 222.0, 333.0  # a batch whose first value is a marker misbehaves


class Scripted(torch.nn.Module):
    """slimkit.testing's tiny MLP, which sleeps, hangs or kills its process on a marker."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marker = float(x[0, 0])
        if marker == EXIT:
            os._exit(7)
        if marker in (SLOW, HANG):
            time.sleep(0.5 if marker == SLOW else 60)
        return self.net(x)


def scripted_mlp() -> Scripted:
    return Scripted().eval()


def examples(n: int, shape: tuple[int, ...] = (8,), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def single_process(spec: str | ModelSpec, runtime: str, x: np.ndarray) -> np.ndarray:
    """The reference: one session, one thread, the whole input as one batch."""
    model = spec.load() if isinstance(spec, ModelSpec) else load_model(spec)
    session = session_for(model, runtime, RuntimeOptions(threads=1))
    try:
        with session.pinned():
            return session.run({"input": x})[0]
    finally:
        session.close()


def assert_no_workers_left(pids: list[int]) -> None:
    """Every worker has exited and been reaped: no orphan, no zombie."""
    assert pids
    for pid in pids:
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        assert proc.ppid() != os.getpid(), f"worker {pid} is still there ({proc.status()})"


@pytest.fixture(scope="module")
def mlp_pool():
    with DataParallel(MLP, runtime="torch", workers=2, threads_per_worker=1) as dp:
        yield dp


# -- split / merge / order: pure -----------------------------------------------------------

def test_split_covers_every_example_once_and_merge_restores_the_order():
    x = examples(23)
    shards = list(split(Dataset({"input": x}), 5))
    assert [(s.index, s.start, s.stop) for s in shards] == \
        [(0, 0, 5), (1, 5, 10), (2, 10, 15), (3, 15, 20), (4, 20, 23)]
    merged = merge([[s.inputs["input"] * 2, s.inputs["input"][:, :1]] for s in shards])
    np.testing.assert_array_equal(merged[0], x * 2)
    np.testing.assert_array_equal(merged[1], x[:, :1])


def test_in_order_buffer_releases_in_index_order_and_refuses_duplicates():
    buf: InOrder[int] = InOrder()
    released = []
    for index in (2, 0, 3, 1, 4):
        buf.put(index, index * 10)
        released += list(buf.ready())
    assert released == [0, 10, 20, 30, 40] and len(buf) == 0
    with pytest.raises(RuntimeError, match="delivered twice"):
        buf.put(3, 0)


# -- bad input: refused before any process starts -----------------------------------------

@pytest.mark.parametrize("make", [
    lambda: DataParallel(MLP, workers=0),
    lambda: DataParallel(MLP, threads_per_worker=0),
    lambda: DataParallel(MLP, runtime="tensorflow"),
    lambda: AdvancedParallelOptions(start_method="fork"),
    lambda: AdvancedParallelOptions(in_flight_per_worker=0),
    lambda: AdvancedParallelOptions(shard_timeout=0),
    lambda: AdvancedParallelOptions(
        runtime_options=RuntimeOptions(optimized_model_path=Path("o.onnx"))),
    lambda: DataParallel(MLP, workers=1).run({"input": examples(4)}, batch_size=0),
    lambda: DataParallel(MLP, workers=1).run({"input": examples(4)}, batch_size=2),
    lambda: DataParallel("model.onnx", runtime="torch", workers=1).start(),
], ids=["workers-0", "threads-0", "runtime", "fork", "in-flight-0", "timeout-0",
        "optimized-path", "batch-0", "not-started", "onnx-on-torch"])
def test_bad_input_is_refused_before_any_worker_starts(make):
    with pytest.raises(InputError):
        make()


def test_more_workers_than_cores_is_allowed_with_a_warning():
    with pytest.warns(OversubscriptionWarning, match="threads on") as record:
        DataParallel(MLP, workers=available_cores() + 1)
    assert record[0].filename == __file__  # the warning points at the caller


def test_workers_that_load_different_weights_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not deterministic"):
        check_fingerprints(ModelSpec(MLP), {0: {"fingerprint": "a"}, 1: {"fingerprint": "b"}},
                           None)
    changed = load_model(MLP)  # changed after loading: the workers' reload would differ
    with torch.no_grad():
        changed.require_module("test").fc1.weight.zero_()
    spec, expected = prepare(changed, "torch", tmp_path)
    assert spec.spec == MLP and expected == weights_fingerprint(changed.module)
    with pytest.raises(ModelLoadError, match="other weights"):
        check_fingerprints(spec, {0: {"fingerprint": weights_fingerprint(tiny_mlp())}},
                           expected)


def test_a_torch_model_for_onnxruntime_is_exported_once_for_all_workers(tmp_path):
    spec, expected = prepare(load_model(MLP), "onnxruntime", tmp_path)
    assert spec.is_onnx and Path(spec.spec).parent == tmp_path and expected is None
    assert prepare(spec, "onnxruntime", tmp_path) == (spec, None)  # a file is used as it is


def test_a_worker_imports_no_numerical_library_before_pinning_its_threads():
    code = ("import sys, slimkit.parallel.worker; "
            "print(sorted({'numpy', 'torch', 'onnxruntime'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"


# -- equality with the single-process run ---------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 4, 7, 23, 50])
def test_torch_outputs_equal_the_single_process_run(mlp_pool, batch_size):
    x = examples(23, seed=batch_size)
    outputs = mlp_pool.run(Dataset({"input": x}), batch_size=batch_size)
    assert len(outputs) == 1
    assert_close_to_reference(outputs[0], single_process(MLP, "torch", x), atol=1e-6, rtol=1e-5)


def test_onnxruntime_outputs_equal_the_single_process_run():
    x = examples(23, (3, 8, 8))
    options = AdvancedParallelOptions(start_method="forkserver", pin_cores=True)
    with DataParallel(CNN, runtime="onnxruntime", workers=2, advanced=options) as dp:
        outputs = dp.run({"input": x}, batch_size=5)
        assert [s["shards"] for s in dp.stats()] != [5, 0]  # both workers took shards
        cores = [tuple(psutil.Process(pid).cpu_affinity()) for pid in dp.worker_pids]
        assert cores == core_plan(2, 1)
    assert_close_to_reference(outputs[0], single_process(CNN, "onnxruntime", x),
                              atol=1e-5, rtol=1e-5)


def test_stream_is_in_order_with_bounded_in_flight_work(mlp_pool):
    sizes = [1, 3, 2, 4, 1, 1, 3, 2, 2, 4, 1, 3]
    batches = [examples(n, seed=i) for i, n in enumerate(sizes)]
    pulled = 0

    def source():
        nonlocal pulled
        for x in batches:
            pulled += 1
            yield {"input": x}

    window = 2 * mlp_pool.advanced.in_flight_per_worker
    for consumed, outputs in enumerate(mlp_pool.imap(source()), start=1):
        assert pulled - consumed <= window  # back-pressure: the input is not read ahead
        assert_close_to_reference(outputs[0], single_process(MLP, "torch", batches[consumed - 1]),
                                  atol=1e-6, rtol=1e-5)
    assert consumed == len(batches)


def test_worker_exception_names_worker_and_shard_and_the_pool_survives(mlp_pool):
    batches = [{"input": examples(4, seed=i)} for i in range(8)]
    batches[3] = {"input": examples(4, (7,))}  # 7 features where the model takes 8
    with pytest.raises(WorkerError, match=r"worker [01] failed on shard 3 \(examples 12:16\)"
                       ) as caught:
        list(mlp_pool.imap(batches))
    assert caught.value.shard == 3 and caught.value.examples == (12, 16)
    assert caught.value.remote_type == "DataError" and caught.value.exit_code == 2
    x = examples(9)
    assert_close_to_reference(mlp_pool.run({"input": x}, batch_size=2)[0],
                              single_process(MLP, "torch", x), atol=1e-6, rtol=1e-5)


def test_a_stream_stopped_early_leaves_the_pool_ready(mlp_pool):
    stream = mlp_pool.imap({"input": examples(2, seed=i)} for i in range(20))
    next(stream)
    with pytest.raises(InputError, match="one run at a time"):
        mlp_pool.run({"input": examples(3)}, batch_size=1)
    stream.close()  # waits out the shards in flight
    assert mlp_pool.run({"input": examples(3)}, batch_size=1)[0].shape == (3, 4)


# -- failures: an error naming worker and shard, never a hang, no process left --------------

def test_worker_crash_mid_run_is_an_error_naming_worker_and_shard():
    with DataParallel(SCRIPTED, runtime="torch", workers=2) as dp:
        pids = dp.worker_pids
        x = examples(12)
        x[0, 0] = SLOW  # shard 0 finishes last: results arrive out of order
        assert_close_to_reference(dp.run({"input": x}, batch_size=2)[0],
                                  single_process(MLP, "torch", x), atol=1e-6, rtol=1e-5)
        x[0, 0], x[10, 0] = 0.0, EXIT  # shard 5 (examples 10:12) kills its worker
        start = time.monotonic()
        with pytest.raises(WorkerCrashedError, match=r"died \(exit code 7\) while running "
                                                     r"shard 5 \(examples 10:12\)") as caught:
            dp.run({"input": x}, batch_size=2)
        assert time.monotonic() - start < 5.0
        assert caught.value.shard == 5 and caught.value.worker in (0, 1)
        with pytest.raises(InputError, match="closed"):
            dp.run({"input": x}, batch_size=2)
    assert_no_workers_left(pids)


def test_killed_worker_is_an_error_not_a_hang():
    with DataParallel(CNN, runtime="onnxruntime", workers=2) as dp:
        pids = dp.worker_pids
        stream = dp.imap({"input": examples(1, (3, 8, 8), seed=i)} for i in range(200))
        next(stream)
        os.kill(pids[0], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(WorkerCrashedError, match=r"worker 0 .*killed by SIGKILL") as caught:
            list(stream)
        assert time.monotonic() - start < 5.0 and caught.value.worker == 0
    assert_no_workers_left(pids)


def test_hung_worker_times_out_naming_the_shard():
    options = AdvancedParallelOptions(shard_timeout=1.0)
    with DataParallel(SCRIPTED, runtime="torch", workers=1, advanced=options) as dp:
        pids = dp.worker_pids
        x = examples(6)
        x[2, 0] = HANG
        start = time.monotonic()
        with pytest.raises(WorkerTimeoutError, match=r"shard 1 \(examples 2:4\) within 1 s"):
            dp.run({"input": x}, batch_size=2)
        assert time.monotonic() - start < 5.0
    assert_no_workers_left(pids)


def test_a_model_a_worker_cannot_open_fails_the_start(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    dp = DataParallel(broken, runtime="onnxruntime", workers=1)
    with pytest.raises(WorkerError, match="worker 0 could not open .*broken.onnx") as caught:
        dp.start()
    assert caught.value.exit_code == 2 and caught.value.remote_type == "ModelLoadError"
    assert_no_workers_left(dp.worker_pids)
