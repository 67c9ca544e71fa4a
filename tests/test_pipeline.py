"""Pipeline parallelism: stages split by torch.fx, balanced by cost, outputs equal to one
process, a stage's exception or crash an error (never a hang), bad splits refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from slimkit.errors import InputError
from slimkit.parallel.errors import WorkerCrashedError, WorkerError
from slimkit.parallel.pipeline import PipelineParallel
from slimkit.parallel.spec import ModelSpec
from slimkit.parallel.stages import balance, build_stages, chain_units, check_boundaries, plan

RAISE, EXIT = 111.0, 222.0  # a micro-batch whose first value is a marker misbehaves
SCRIPTED = ModelSpec(f"{Path(__file__).resolve()}:scripted_chain", input_shape=(1, 8))


class Marker(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marker = float(x[0, 0])
        if marker == EXIT:
            os._exit(7)
        if marker == RAISE:
            raise ValueError("marker says no")
        return x


class Chain(torch.nn.Module):
    """Linear -> ReLU -> Linear -> Marker -> Linear, with a flatten between (a function)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(
            16, 16)
        self.marker, self.fc3 = Marker(), torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act(self.fc1(self.marker(x))))
        return self.fc3(torch.flatten(x, 1))


class Residual(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + x


def scripted_chain() -> Chain:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Chain().eval()


def reference(x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return scripted_chain()(torch.from_numpy(x)).numpy()


def examples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def test_chain_units_follow_execution_order_and_functions_join_the_unit_before():
    _, units = chain_units(scripted_chain())
    assert units == [["marker"], ["fc1"], ["act"], ["fc2", "flatten"], ["fc3"]]
    with pytest.raises(InputError, match=r"do not run as a chain \('add' takes \['b', 'x'\]"):
        chain_units(Residual())


def test_stage_modules_compose_to_the_model():
    x = torch.from_numpy(examples(5))
    stages = build_stages(scripted_chain(), (2, 4))
    with torch.inference_mode():
        y = x
        for stage in stages:
            y = stage(y)
    np.testing.assert_array_equal(y.numpy(), reference(examples(5)))


def test_balance_minimises_the_slowest_stage():
    assert balance([1, 1, 1, 3], 2) == (3,)
    assert balance([5, 1, 1, 1, 1, 1], 2) == (1,)
    assert balance([1, 2, 3, 4, 5, 6], 3) == (3, 5)  # 1+2+3 | 4+5 | 6: the slowest is 9
    with pytest.raises(InputError, match="3 stages cannot be made from 2 units"):
        balance([1, 1], 3)


@pytest.mark.parametrize("cuts,stages", [((0,), 2), ((5,), 2), ((3, 2), 3), ((1,), 3)])
def test_a_split_that_does_not_match_the_model_is_refused(cuts, stages):
    units = ["marker", "fc1", "act", "fc2", "fc3"]
    with pytest.raises(InputError, match=r"stage split .* does not match the model.*"
                                          r"its 5 units \['marker'"):
        check_boundaries(cuts, units, stages)
    with pytest.raises(InputError, match="does not match the model"):
        PipelineParallel(SCRIPTED, stages=stages, split=cuts).start()


def test_plan_measures_every_unit():
    p = plan(scripted_chain(), examples(4), stages=2)
    assert p.units == ("marker", "fc1", "act", "fc2", "fc3") and len(p.boundaries) == 1
    assert len(p.unit_ms) == 5 and sum(p.stage_ms) == pytest.approx(sum(p.unit_ms), abs=1e-3)
    assert plan(scripted_chain(), examples(4), 3, boundaries=(1, 3)).boundaries == (1, 3)


def test_outputs_equal_one_process_then_a_stage_exception_is_an_error():
    with PipelineParallel(SCRIPTED, stages=2, micro_batch=3) as pp:
        assert sum(len(s) for s in pp.plan.stages) == 5 and len(pp.plan.stages) == 2
        for n in (1, 3, 10):
            x = examples(n, seed=n)
            np.testing.assert_allclose(pp.run({"input": x})[0], reference(x), atol=1e-6,
                                       rtol=1e-6)
        x = examples(9)
        x[6, 0] = RAISE  # micro-batch 2
        with pytest.raises(WorkerError, match="stage 0 failed on micro-batch 2 .*marker says no"):
            pp.run({"input": x})
        with pytest.raises(InputError, match="closed or failed"):
            pp.run({"input": x})


def test_a_stage_crash_mid_run_is_an_error_not_a_hang():
    pp = PipelineParallel(SCRIPTED, stages=2, micro_batch=2).start()
    pids = [s.process.pid for s in pp._procs]
    x = examples(20)
    x[10, 0] = EXIT
    start = time.monotonic()
    with pytest.raises(WorkerCrashedError, match=r"stage 0 .* died \(exit code 7\) with "
                                                 r"micro-batches \[.*5.*\] in the pipeline"):
        pp.run({"input": x})
    assert time.monotonic() - start < 10
    for pid in pids:
        with pytest.raises(psutil.NoSuchProcess):
            psutil.Process(pid).status()


@pytest.mark.slow
def test_balanced_resnet_pipeline_equals_one_process():
    from slimkit import load_model

    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    with PipelineParallel("builtin:resnet18-cifar", stages=2, micro_batch=4) as pp:
        out = pp.run({"input": x})[0]
        assert 0 < pp.plan.boundaries[0] < len(pp.plan.units)
    with torch.inference_mode():
        ref = load_model("builtin:resnet18-cifar").module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
