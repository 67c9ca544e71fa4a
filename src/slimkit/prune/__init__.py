"""Pruning: structured channel removal (a physically smaller model, planned as JSON and
replayable) and unstructured masks; iterative prune -> fine-tune (the training itself is
``slimkit.train``'s); a sensitivity scan for per-group ratios."""

from slimkit.graph.plan import PrunePlan, apply_plan
from slimkit.prune.api import AdvancedPrune, measure_latency, prune
from slimkit.prune.config import GroupReduce, PruneConfig, PruneMode, Scope
from slimkit.prune.core import PruneResult
from slimkit.prune.importance import IMPORTANCE
from slimkit.prune.iterative import prune_and_finetune
from slimkit.prune.save import load_pruned, save_pruned
from slimkit.prune.sensitivity import SensitivityResult, sensitivity_scan
from slimkit.prune.structured import plan_pruning

__all__ = ["IMPORTANCE", "AdvancedPrune", "GroupReduce", "PrunePlan", "PruneConfig", "PruneMode",
           "PruneResult", "Scope", "SensitivityResult", "apply_plan", "load_pruned",
           "measure_latency", "plan_pruning", "prune", "prune_and_finetune", "save_pruned",
           "sensitivity_scan"]
