"""Pruning: structured channel removal (a physically smaller model, planned as JSON and
replayable) and unstructured masks with a cubic schedule and ``finalize``."""

from slimkit.prune.api import PruneResult, prune
from slimkit.prune.config import GroupReduce, PruneConfig, PruneMode, Scope
from slimkit.prune.importance import IMPORTANCE
from slimkit.prune.plan import PrunePlan, apply_plan
from slimkit.prune.save import load_pruned, save_pruned
from slimkit.prune.structured import plan_pruning
from slimkit.prune.unstructured import cubic_sparsity, finalize

__all__ = ["IMPORTANCE", "GroupReduce", "PrunePlan", "PruneConfig", "PruneMode", "PruneResult",
           "Scope", "apply_plan", "cubic_sparsity", "finalize", "load_pruned", "plan_pruning",
           "prune", "save_pruned"]
