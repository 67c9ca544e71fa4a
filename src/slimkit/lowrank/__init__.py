"""Low-rank factorisation: Linear layers by truncated SVD, convolutions by channel SVD or
Tucker-2, the rank chosen per layer by energy, ratio or a fixed value, applied only where it
lowers the MACs; saved as a replayable plan (ranks as JSON) + safetensors."""

from slimkit.lowrank.api import LowRankResult, fidelity, low_rank
from slimkit.lowrank.config import ConvMethod, LowRankConfig, RankRule
from slimkit.lowrank.factorize import FACTORIZERS, energy_rank
from slimkit.lowrank.plan import apply_lowrank_plan
from slimkit.lowrank.save import is_lowrank_folder, load_lowrank, save_lowrank

__all__ = ["FACTORIZERS", "ConvMethod", "LowRankConfig", "LowRankResult", "RankRule",
           "apply_lowrank_plan", "energy_rank", "fidelity", "is_lowrank_folder", "load_lowrank",
           "low_rank", "save_lowrank"]
