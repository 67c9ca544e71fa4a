"""Recipes: YAML lists of compression stages (prune, finetune, quantize, export, and the
optional techniques that are installed), loaded into the Python API's config dataclasses and
run by ``compress``."""

from slimkit.recipe.finetune import FinetuneConfig, finetune
from slimkit.recipe.recipe import Recipe, Stage, load_recipe
from slimkit.recipe.run import CompressResult, compress
from slimkit.recipe.stages import STAGES, PipelineState, StageType, register_stage

__all__ = ["STAGES", "CompressResult", "FinetuneConfig", "PipelineState", "Recipe", "Stage",
           "StageType", "compress", "finetune", "load_recipe", "register_stage"]
