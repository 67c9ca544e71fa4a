"""Low-rank factorisation: Linear layers by truncated SVD, convolutions by channel SVD or
Tucker-2, the rank chosen per layer by energy, ratio, a fixed value or a sensitivity scan
(``rank_scan``), applied only where it
lowers the MACs; saved as a replayable plan (ranks as JSON) + safetensors."""

from slimkit.lowrank.api import LowRankResult, fidelity, low_rank
from slimkit.lowrank.config import ConvMethod, LowRankConfig, RankRule
from slimkit.lowrank.factorize import FACTORIZERS, energy_rank
from slimkit.lowrank.plan import apply_lowrank_plan
from slimkit.lowrank.save import is_lowrank_folder, load_lowrank, save_lowrank
from slimkit.lowrank.sensitivity import RankScan, low_rank_by_scan, rank_scan

__all__ = ["FACTORIZERS", "ConvMethod", "LowRankConfig", "LowRankResult", "RankRule", "RankScan",
           "apply_lowrank_plan", "energy_rank", "fidelity", "is_lowrank_folder", "load_lowrank",
           "low_rank", "low_rank_by_scan", "rank_scan", "save_lowrank"]
