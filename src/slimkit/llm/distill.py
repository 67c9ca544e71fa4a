"""Recovery by distillation: a pruned (or otherwise compressed) causal LM learns the original's
next-token distributions on local text, through the one training loop (``slimkit.train``).

The loss of a batch is ``KL(teacher || student)`` of the next-token distributions at every
position (softened by ``temperature``, times T**2; ``slimkit.distill.soft_kl``), plus, with
``hidden_weight``, the mean squared error between the final hidden states (the LM head's input:
the hidden size is never pruned, so they always pair up). The teacher runs under ``no_grad``
inside the loss step. Zeros of a sparse student (Wanda, SparseGPT, 2:4) are kept: its masks
are re-applied before every step and after the last. By default the (tied) embeddings stay
frozen, which keeps the vocabulary matrix shared with the teacher and saves a sixth of the work.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from slimkit.data import Dataset
from slimkit.distill.losses import soft_kl
from slimkit.errors import InputError
from slimkit.llm.load import hf_module, write_hf_folder
from slimkit.llm.prune.api import check_output_folder
from slimkit.llm.prune.calibration import calibration_windows
from slimkit.llm.prune.config import CALIBRATION_TEXT
from slimkit.llm.text import Text
from slimkit.model import Model
from slimkit.train import TrainBatch, TrainConfig, Trainer
from slimkit.train.loop import Optimizer

REPORT_FILE = "slimkit_distill.json"
CHECK_WINDOWS = 4
SPARSE_KEEP = 0.1  # a weight matrix with more zeros than this keeps them while training


@dataclass(frozen=True)
class LLMDistillConfig:
    """How to distil a causal LM.

    Args:
        steps: optimizer steps (AdamW, cosine schedule to 0).
        window: tokens per training window (disjoint windows of the text).
        batch_size: windows per step.
        lr: peak learning rate.
        temperature: softening of both distributions (1: the plain next-token KL).
        hidden_weight: weight of the final-hidden-state MSE (0: logits only).
        train_embeddings: also train the (tied) embeddings / LM head.
        seed: the batch order.
        threads: torch threads while training (None: as they are).

    Example:
        >>> LLMDistillConfig(steps=10).tokens
        10240
    """

    steps: int = 200
    window: int = 256
    batch_size: int = 4
    lr: float = 1e-4
    temperature: float = 1.0
    hidden_weight: float = 0.0
    train_embeddings: bool = False
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.window < 8:
            raise InputError(f"distillation needs steps >= 1, batch_size >= 1 and window >= 8 "
                             f"(got {self.steps}, {self.batch_size}, {self.window})")
        for name in ("lr", "temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be > 0, got {value}")
        if not (math.isfinite(self.hidden_weight) and self.hidden_weight >= 0):
            raise InputError(f"hidden_weight must be >= 0, got {self.hidden_weight}")

    @property
    def tokens(self) -> int:
        """Tokens the student trains on (steps x batch x window)."""
        return self.steps * self.batch_size * self.window

    def train_config(self, windows: int) -> TrainConfig:
        epochs = math.ceil(self.steps * self.batch_size / windows)
        return TrainConfig(epochs=epochs, lr=self.lr, optimizer=Optimizer.ADAMW,
                           batch_size=self.batch_size, seed=self.seed, max_steps=self.steps,
                           threads=self.threads)


@dataclass
class LLMDistillResult:
    """The distilled student (a copy) and the report (steps, tokens, CPU minutes, KL)."""

    model: Model
    report: dict[str, Any]

    def save(self, folder: str | Path) -> Path:
        """A Hugging Face folder plus ``slimkit_distill.json``, renamed into place."""
        return write_hf_folder(self.model, check_output_folder(folder, REPORT_FILE),
                               REPORT_FILE, self.report)


def distill_llm(student: Model, teacher: Model, text: str | Text = CALIBRATION_TEXT,
                config: LLMDistillConfig | None = None) -> LLMDistillResult:
    """Distil ``teacher``'s next-token distributions into a copy of ``student`` on ``text``.

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.llm.prune import LLMPruneConfig, prune_llm
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> t = load_causal_lm(tiny_llama_folder(pathlib.Path(tempfile.mkdtemp())))
        >>> s = prune_llm(t, LLMPruneConfig(method="depth", ratio=0.5, windows=2, window=64))
        >>> r = distill_llm(s.model, t, config=LLMDistillConfig(steps=20, window=64, lr=1e-3))
        >>> r.report["kl_after"] < r.report["kl_before"]
        True
    """
    config = config or LLMDistillConfig()
    teacher_hf, student_hf = hf_module(teacher), hf_module(student)
    if teacher_hf.config.vocab_size != student_hf.config.vocab_size:
        raise InputError("student and teacher have different vocabularies; distillation of "
                         "next-token distributions needs the same tokenizer")
    calib = calibration_windows(teacher.tokenizer, text, None, config.window)
    ids = calib.ids.numpy()
    data = Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)}, name="text")
    trained = replace(student, module=copy.deepcopy(student.module), meta=dict(student.meta))
    hf = hf_module(trained)
    _freeze_embeddings(hf, config.train_embeddings)
    masks = sparse_masks(hf)
    check = calib.ids[:CHECK_WINDOWS]
    kl_before = mean_kl(teacher_hf, hf, check)
    losses: list[float] = []
    start, cpu = time.perf_counter(), time.process_time()
    trainer = Trainer(trained, data, config.train_config(len(data)),
                      distill_loss(teacher_hf, config), before_step=lambda _: apply_masks(masks),
                      description="distilling")
    trainer.run(after_step=lambda _, loss: _record(losses, loss))
    apply_masks(masks)
    seconds = {"wall": round(time.perf_counter() - start, 1),
               "cpu": round(time.process_time() - cpu, 1)}
    for p in hf.parameters():
        p.requires_grad_(True)
    report = {"config": {**config.__dict__}, "text": calib.describe(), "steps": len(losses),
              "tokens": len(losses) * config.batch_size * config.window,
              "seconds": seconds, "cpu_minutes": round(seconds["cpu"] / 60, 2),
              "threads": config.threads or torch.get_num_threads(),
              "loss_first": _mean(losses[:10]), "loss_last": _mean(losses[-10:]),
              "kl_before": kl_before, "kl_after": mean_kl(teacher_hf, hf, check),
              "kl_windows": int(check.shape[0]), "sparse_layers_kept": len(masks)}
    trained.name = f"{student.name}-distilled"
    return LLMDistillResult(trained, report)


def distill_loss(teacher_hf: Any, config: LLMDistillConfig) -> Any:
    """The loss step of the training loop: the teacher's and the student's forward passes and
    their next-token KL (plus the hidden-state MSE)."""
    teacher_hf.eval()

    def loss(module: torch.nn.Module, batch: TrainBatch) -> torch.Tensor:
        ids = batch.args[0]
        with torch.no_grad():
            t_hidden, t_logits = _forward(teacher_hf, ids)
        s_hidden, s_logits = _forward(module.model, ids)  # type: ignore[arg-type]
        vocab = s_logits.shape[-1]
        value = soft_kl(s_logits.reshape(-1, vocab), t_logits.reshape(-1, vocab),
                        config.temperature)
        if config.hidden_weight:
            value = value + config.hidden_weight * F.mse_loss(s_hidden, t_hidden)
        return value

    return loss


def _forward(hf: Any, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = hf.model(input_ids=ids, use_cache=False).last_hidden_state
    return hidden, hf.lm_head(hidden)


def mean_kl(teacher_hf: Any, student_hf: Any, ids: torch.Tensor) -> float:
    """Mean next-token ``KL(teacher || student)`` over every position of ``ids``."""
    with torch.no_grad():
        t = teacher_hf(input_ids=ids, use_cache=False).logits
        s = student_hf(input_ids=ids, use_cache=False).logits
    return round(float(soft_kl(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), 1.0)), 5)


def sparse_masks(hf: Any) -> dict[torch.Tensor, torch.Tensor]:
    """The non-zero pattern of every Linear weight with more than ``SPARSE_KEEP`` zeros."""
    masks: dict[torch.Tensor, torch.Tensor] = {}
    for module in hf.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.requires_grad:
            keep = module.weight.detach() != 0
            if 1 - float(keep.float().mean()) > SPARSE_KEEP:
                masks[module.weight] = keep
    return masks


def apply_masks(masks: dict[torch.Tensor, torch.Tensor]) -> None:
    with torch.no_grad():
        for param, keep in masks.items():
            param.mul_(keep)


def _freeze_embeddings(hf: Any, train: bool) -> None:
    for layer in (hf.get_input_embeddings(), hf.get_output_embeddings()):
        if layer is not None:
            layer.weight.requires_grad_(train)


def _record(losses: list[float], loss: float) -> bool:
    losses.append(loss)
    return False  # never stop early


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 5) if values else None
