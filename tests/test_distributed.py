"""Data-parallel fine-tuning (torch DDP, gloo, 2 worker processes) against one process."""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.parallel.errors import WorkerCrashedError, WorkerError, WorkerTimeoutError
from slimkit.prune import PruneConfig, PruneMode, prune
from slimkit.testing import tiny_model
from slimkit.train.ddp import finetune_ddp, launched_by_torchrun
from slimkit.train.finetune import finetune
from slimkit.train.hooks import FinetuneConfig, TrainHooks
from slimkit.train.loop import TrainBatch
from slimkit.train.replica import threads_per_rank

# float sums in another order (per-worker partial sums, then the all-reduce): a few ulps per
# step, over 14 Adam steps on weights of magnitude ~0.5
ATOL, RTOL = 2e-5, 1e-4
# multiprocessing's own helpers: they serve the whole process and exit with it
MP_HELPER = re.compile(r"multiprocessing\.(resource_tracker|forkserver)")


def digits_like(n: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset({"input": rng.standard_normal((n, 8)).astype(np.float32)},
                   rng.integers(0, 4, n))


def weights(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_allclose(wb[name], wa[name], atol=ATOL, rtol=RTOL, err_msg=name)


@pytest.fixture
def clean_exit(tmp_path, monkeypatch):
    """Temporary folders under tmp_path; afterwards: no worker process, no listening port,
    no temporary folder left."""
    import tempfile

    psutil = pytest.importorskip("psutil")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    me = psutil.Process()
    listening = {c.laddr for c in me.net_connections("tcp") if c.status == "LISTEN"}
    yield tmp_path
    assert multiprocessing.active_children() == []
    left = [p for p in me.children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE
            and not MP_HELPER.search(" ".join(p.cmdline()))]
    assert left == []
    now = {c.laddr for c in me.net_connections("tcp") if c.status == "LISTEN"}
    assert now <= listening
    assert list(tmp_path.glob("slimkit-ddp-*")) == []


def test_two_workers_match_one_process(clean_exit):
    # 63 examples, batch 10: six even batches and a last one of 3 split 2 + 1 (weighted 4/3
    # and 2/3), so the uneven share is covered
    model, data = tiny_model("mlp"), digits_like(63)
    before = weights(model.module)
    config = FinetuneConfig(epochs=2, batch_size=10, lr=0.05, seed=3)
    one = finetune(model, data, config)
    two = finetune(model, data, FinetuneConfig(epochs=2, batch_size=10, lr=0.05, seed=3,
                                              workers=2))
    assert_same_weights(one.model.module, two.model.module)
    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5)
    assert not two.model.module.training
    for name, value in weights(model.module).items():  # the input model is untouched
        np.testing.assert_array_equal(value, before[name])


def _mse_closure():
    scale = 1.0  # a closure: sent to the workers with cloudpickle

    def loss_fn(outputs, batch: TrainBatch) -> torch.Tensor:
        return scale * torch.nn.functional.mse_loss(outputs, batch.teacher_outputs)

    return loss_fn


def test_masks_and_teacher_hooks_train_data_parallel(clean_exit):
    pytest.importorskip("cloudpickle")
    teacher, data = tiny_model("mlp"), digits_like(32, seed=1)
    student = prune(teacher, PruneConfig(mode=PruneMode.UNSTRUCTURED, ratio=0.5)).model
    hooks = TrainHooks(loss_fn=_mse_closure(), teacher=teacher)
    config = FinetuneConfig(epochs=1, batch_size=8, lr=0.05)
    one = finetune(student, data, config, hooks)
    two = finetune_ddp(student, data, config, hooks, workers=2)
    assert_same_weights(one.model.module, two.model.module)
    masked = two.model.module.fc1
    assert float((masked.weight == 0).float().mean()) >= 0.5  # the masks stayed applied
    np.testing.assert_array_equal(masked.weight_mask.numpy(),
                                  student.module.fc1.weight_mask.numpy())



def test_batchnorm_model_trains_with_rank_zero_statistics(clean_exit):
    # BatchNorm normalises each worker's half batch (no SyncBatchNorm on CPU): the weights
    # differ from one process's slightly; rank 0's running statistics come back
    model = tiny_model("cnn")
    rng = np.random.default_rng(0)
    data = Dataset({"input": rng.standard_normal((32, 3, 8, 8)).astype(np.float32) + 2.0},
                   rng.integers(0, 4, 32))
    config = FinetuneConfig(epochs=1, batch_size=8, lr=0.01)
    one, two = finetune(model, data, config), finetune_ddp(model, data, config, workers=2)
    mean = two.model.module.bn.running_mean.numpy()
    assert not np.allclose(mean, model.module.bn.running_mean.numpy())  # updated by training
    # rank 0's statistics are of its half batches: close to one process's, not equal
    np.testing.assert_allclose(mean, one.model.module.bn.running_mean.numpy(), atol=0.1)
    np.testing.assert_allclose(two.losses, one.losses, rtol=0.05)

class FailOnRank:
    """A loss that raises on one rank at a given step (module level: picklable)."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step, self.calls = rank, step, 0

    def __call__(self, outputs, batch: TrainBatch) -> torch.Tensor:
        import torch.distributed as dist

        self.calls += 1
        if dist.get_rank() == self.rank and self.calls == self.step:
            raise RuntimeError("injected failure")
        return torch.nn.functional.cross_entropy(outputs, batch.labels)


class DieOnRank(FailOnRank):
    def __call__(self, outputs, batch: TrainBatch) -> torch.Tensor:
        import torch.distributed as dist

        if dist.get_rank() == self.rank:
            os._exit(9)  # no exception, no cleanup: as a native crash or the OOM killer
        return super().__call__(outputs, batch)



class HangOnRank(FailOnRank):
    def __call__(self, outputs, batch: TrainBatch) -> torch.Tensor:
        import torch.distributed as dist

        if dist.get_rank() == self.rank:
            time.sleep(120)  # stuck: its peer waits in the gradient all-reduce
        return super().__call__(outputs, batch)

def test_a_raising_worker_stops_the_job_with_its_error(clean_exit):
    model, data = tiny_model("mlp"), digits_like(64)
    config = FinetuneConfig(epochs=3, batch_size=8)
    started = time.perf_counter()
    with pytest.raises(WorkerError, match="worker 1 of 2 failed: RuntimeError: injected "
                                          "failure; the other workers were stopped") as info:
        finetune_ddp(model, data, config, TrainHooks(loss_fn=FailOnRank(1, 3)), workers=2)
    assert time.perf_counter() - started < 30  # start-up of 2 processes + the failure: no hang
    assert "injected failure" in (info.value.remote_traceback or "")
    assert info.value.worker == 1


def test_a_dead_worker_is_reported_as_a_crash(clean_exit):
    model, data = tiny_model("mlp"), digits_like(64)
    started = time.perf_counter()
    with pytest.raises(WorkerCrashedError, match="worker 1 of 2 died .*exit code 9"):
        finetune_ddp(model, data, FinetuneConfig(epochs=1, batch_size=8),
                     TrainHooks(loss_fn=DieOnRank(1, 1)), workers=2)
    assert time.perf_counter() - started < 30



def test_prune_cli_fine_tunes_on_two_workers(tmp_path, capsys, clean_exit):
    import json

    from slimkit.cli import main

    data = digits_like(32)
    np.savez(tmp_path / "d.npz", input=data.inputs["input"], labels=data.labels)
    code = main(["prune", "slimkit.testing:tiny_mlp", "--input-shape", "1x8", "-o",
                 str(tmp_path / "out"), "--round-to", "2", "--data", str(tmp_path / "d.npz"),
                 "--finetune-epochs", "1", "--iterations", "2", "--batch-size", "8",
                 "--finetune-workers", "2", "--json"])
    report = json.loads(capsys.readouterr().out)["finetune"]
    assert code in (0, None) and report["config"]["workers"] == 2
    assert [len(step["losses"]) for step in report["steps"]] == [1, 1]
    assert main(["prune", "slimkit.testing:tiny_mlp", "--input-shape", "1x8", "-o",
                 str(tmp_path / "x"), "--data", str(tmp_path / "d.npz"), "--finetune-epochs",
                 "1", "--finetune-workers", "0"]) == 2
    assert "workers must be in" in capsys.readouterr().err

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"workers": 0}, "workers must be in"),
    ({"workers": 9, "batch_size": 8}, "workers must be in"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        FinetuneConfig(**kwargs)
    assert FinetuneConfig(workers=2).to_dict()["workers"] == 2


def test_bad_input_fails_before_any_process_starts():
    model = tiny_model("mlp")
    unlabelled = Dataset({"input": np.ones((8, 8), np.float32)})
    with pytest.raises(InputError, match="needs labelled data"):
        finetune_ddp(model, unlabelled, FinetuneConfig(batch_size=4), workers=2)
    with pytest.raises(InputError, match="workers must be in"):
        finetune_ddp(model, digits_like(8), FinetuneConfig(batch_size=4), workers=5)
    with pytest.raises(InputError, match="need at least as many examples"):
        finetune_ddp(model, digits_like(1), FinetuneConfig(batch_size=4), workers=2)
    with pytest.raises(InputError, match="cannot be sent to worker processes"):
        finetune_ddp(model, digits_like(8), FinetuneConfig(batch_size=4),
                     TrainHooks(loss_fn=Unpicklable()), workers=2)
    assert multiprocessing.active_children() == []


class Unpicklable:
    def __call__(self, outputs, batch):  # pragma: no cover - never runs
        raise AssertionError

    def __reduce__(self):
        raise TypeError("cannot pickle this loss")


def test_threads_split_the_cores():
    assert threads_per_rank(2, 2) == (1, 1)
    assert sum(threads_per_rank(16, 3)) == 16
    assert not launched_by_torchrun()


def test_epochs_zero_launches_nothing():
    model = tiny_model("mlp")
    result = finetune_ddp(model, digits_like(8), FinetuneConfig(epochs=0, batch_size=4),
                          workers=2)
    assert result.losses == [] and result.model.module is not model.module
    assert multiprocessing.active_children() == []


TORCHRUN_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from slimkit.data import Dataset
    from slimkit.train import FinetuneConfig
    from slimkit.train.ddp import finetune_ddp
    from slimkit.testing import tiny_model

    if __name__ == "__main__":
        rng = np.random.default_rng(0)
        data = Dataset({"input": rng.standard_normal((63, 8)).astype(np.float32)},
                       rng.integers(0, 4, 63))
        r = finetune_ddp(tiny_model("mlp"), data,
                         FinetuneConfig(epochs=2, batch_size=10, lr=0.05, seed=3))
        if os.environ["RANK"] == "0":
            from safetensors.torch import save_model
            save_model(r.model.module, sys.argv[1])
""")


@pytest.mark.slow
def test_the_same_call_joins_a_torchrun_job(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT)
    out = tmp_path / "w.safetensors"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", "2", str(script), str(out)], check=True, timeout=300,
                   cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path.cwd() / "src")})
    one = finetune(tiny_model("mlp"), digits_like(63),
                   FinetuneConfig(epochs=2, batch_size=10, lr=0.05, seed=3))
    got = load_file(str(out))
    for name, value in weights(one.model.module).items():
        np.testing.assert_allclose(got[name].numpy(), value, atol=ATOL, rtol=RTOL)


def test_a_stuck_worker_times_out_instead_of_hanging(clean_exit):
    model, data = tiny_model("mlp"), digits_like(64)
    started = time.perf_counter()
    with pytest.raises(WorkerTimeoutError, match="worker 0 of 2 failed .no word from its peers "
                                                 "within timeout_s=3; still busy when stopped: "
                                                 "worker 1"):
        finetune_ddp(model, data, FinetuneConfig(epochs=1, batch_size=8),
                     TrainHooks(loss_fn=HangOnRank(1, 1)), workers=2, timeout_s=3)
    assert time.perf_counter() - started < 30
