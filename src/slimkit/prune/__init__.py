"""Pruning: structured channel removal (a physically smaller model, planned as JSON and
replayable) and unstructured masks with a cubic schedule and ``finalize``; fine-tuning and
iterative prune -> fine-tune; a sensitivity scan for per-group ratios."""

from slimkit.prune.api import PruneResult, prune
from slimkit.prune.batchnorm import recalibrate_batchnorm
from slimkit.prune.config import GroupReduce, PruneConfig, PruneMode, Scope
from slimkit.prune.finetune import FinetuneConfig, TrainHooks, finetune, prune_and_finetune
from slimkit.prune.importance import IMPORTANCE
from slimkit.prune.plan import PrunePlan, apply_plan
from slimkit.prune.save import load_pruned, save_pruned
from slimkit.prune.sensitivity import SensitivityResult, sensitivity_scan
from slimkit.prune.structured import plan_pruning
from slimkit.prune.unstructured import cubic_sparsity, finalize

__all__ = ["IMPORTANCE", "FinetuneConfig", "GroupReduce", "PrunePlan", "PruneConfig",
           "PruneMode", "PruneResult", "Scope", "SensitivityResult", "TrainHooks", "apply_plan",
           "cubic_sparsity", "finalize", "finetune", "load_pruned", "plan_pruning", "prune",
           "prune_and_finetune", "recalibrate_batchnorm", "save_pruned",
           "sensitivity_scan"]
