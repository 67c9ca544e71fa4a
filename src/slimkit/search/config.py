"""The search config: one frozen dataclass that ``slimkit compress --auto`` flags map onto."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any

from slimkit.config import coerce_enums, config_to_dict
from slimkit.errors import InputError


class Objective(str, enum.Enum):
    LATENCY = "latency"  # ONNX Runtime latency (proxy during trials: MACs)
    SIZE = "size"  # file size (proxy during trials: weight bytes)
    BOTH = "both"


class ExecutorKind(str, enum.Enum):
    INPROCESS = "inprocess"
    RAY = "ray"


class SamplerKind(str, enum.Enum):
    TPE = "tpe"
    NSGA2 = "nsga2"


@dataclass(frozen=True)
class SearchConfig:
    """How to search.

    Args:
        max_drop: the largest metric drop (absolute) the result may have.
        objective: what to minimise: latency, size or both.
        budget_s: wall-clock budget in seconds (None: only ``trials`` bounds the search).
        trials: proxy trials (pruning ratio per group, int8 or float per layer; no fine-tune),
            the first of them the single-technique points (every group at one ratio; int8
            alone).
        finalists: promising proxy candidates then fine-tuned, exported and measured.
        seed: seeds the sampler; the same seed gives the same trials.
        sampler: tpe or nsga2 (Optuna multi-objective samplers with constraints).
        ratios: the pruning ratios a group may take (bounded per group by the sensitivity
            scan).
        quantize: put int8 (static, per-channel) in the space.
        quant_layer_choices: the most int8-sensitive layers get their own int8/float choice.
        finetune_epochs, finetune_lr: the finalists' fine-tuning (0 epochs: none). The
            default rate suits CNNs; pretrained transformers want ~5e-5 (at 1e-3, 3 epochs
            of MiniLM on 256 sentences lowered its cosine to the original, measured).
        finetune_workers: data-parallel (DDP) processes of each finalist's fine-tuning.
        proxy_max_drop: the constraint of the proxy trials; None: ``max_drop`` when the
            finalists are not fine-tuned (the proxy is then the model itself), else no
            constraint: a proxy cannot tell what fine-tuning will recover, so the finalists
            are fine-tuned along the proxy front in bisection order instead.
        refine_steps: steps of the second round's walk down from the cheapest finalist that
            held, under the drop limit the first finalists' fine-tuning calibrated (see
            ``search/refine.py``); None: 6 when the finalists are fine-tuned, else 0. The
            finalists are then shared between the two rounds.
        bn_batches: proxy trials re-estimate BatchNorm statistics on this many training
            batches before scoring (adaptive BN, as EagleEye; the recipes get the same
            ``batchnorm`` stage); 0: off.
        executor: inprocess or ray; ``workers`` trials run per batch (Ray: in parallel, each
            pinned to ``threads`` CPUs); ``ray_address`` joins a running cluster.
        storage: an Optuna RDB URL or SQLite file path (default: search.db in the output).
        study_name: default: derived from the model digest.
        threads: threads of the latency measurement (and of fine-tuning's torch).
        trial_threads: threads per proxy trial (Ray: CPUs per task).
        eval_examples: examples scored per proxy trial.
        int8_speed: the latency proxy's speed-up of an int8 layer; None: this CPU's integer
            over float GEMM throughput, measured (the quantization preflight's u8 x s8
            micro-benchmark: about 1.0 on AVX2 without VNNI, about 4 with AVX-512 VNNI).
    """

    max_drop: float = 0.01
    objective: Objective = Objective.LATENCY
    budget_s: float | None = None
    trials: int = 40
    finalists: int = 4
    seed: int = 0
    sampler: SamplerKind = SamplerKind.TPE
    ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.625, 0.75, 0.875)
    quantize: bool = True
    quant_layer_choices: int = 4
    finetune_epochs: int = 3
    finetune_lr: float = 1e-3
    finetune_workers: int = 1
    proxy_max_drop: float | None = None
    bn_batches: int = 4
    refine_steps: int | None = None
    executor: ExecutorKind = ExecutorKind.INPROCESS
    workers: int = 1
    ray_address: str | None = None
    storage: str | None = None
    study_name: str | None = None
    threads: int = 1
    trial_threads: int = 1
    eval_examples: int = 512
    int8_speed: float | None = None

    def __post_init__(self) -> None:
        coerce_enums(self, {"objective": Objective, "executor": ExecutorKind,
                            "sampler": SamplerKind})
        object.__setattr__(self, "ratios", tuple(sorted(set(self.ratios))))
        if not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise InputError(f"max_drop must be a number >= 0, got {self.max_drop}")
        if self.budget_s is not None and not self.budget_s > 0:
            raise InputError("budget must be > 0 seconds")
        if min(self.trials, self.finalists, self.workers, self.threads, self.trial_threads,
               self.finetune_workers) < 1:
            raise InputError("trials, finalists, workers, finetune_workers and (trial) threads "
                             "must be >= 1")
        if not self.ratios or any(not 0 <= r < 1 for r in self.ratios):
            raise InputError(f"ratios must be in [0, 1), got {list(self.ratios)}")
        if min(self.quant_layer_choices, self.finetune_epochs, self.bn_batches,
               self.refine_steps or 0) < 0 \
                or self.eval_examples < 1:
            raise InputError("quant_layer_choices, finetune_epochs, bn_batches and "
                             "refine_steps must be >= 0, eval_examples >= 1")
        if self.int8_speed is not None and not self.int8_speed > 0:
            raise InputError("int8_speed must be > 0")

    @property
    def proxy_limit(self) -> float | None:
        """The proxy trials' largest drop (None: unconstrained)."""
        if self.proxy_max_drop is not None:
            return self.proxy_max_drop
        return self.max_drop if self.finetune_epochs == 0 else None

    @property
    def second_round_steps(self) -> int:
        if self.refine_steps is not None:
            return self.refine_steps
        return 6 if self.proxy_limit is None else 0

    @property
    def first_round_finalists(self) -> int:
        """Finalists of the first round; the rest go to the second (if there is one)."""
        if self.second_round_steps == 0:
            return self.finalists
        return self.finalists - self.finalists // 2

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``30m``, ``1.5h``.

    Example:
        >>> parse_duration("30m"), parse_duration("1.5h"), parse_duration("45")
        (1800.0, 5400.0, 45.0)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise InputError(f"budget '{text}' is not a duration such as 90s, 30m or 1.5h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
