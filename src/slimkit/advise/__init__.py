"""The advisor: measure a model on this CPU, then say which techniques pay and why (``api``),
from one small class per technique (``techniques``)."""

from slimkit.advise.api import advise
from slimkit.advise.config import Advice, AdviseConfig, Measurements, Recommendation

__all__ = ["Advice", "AdviseConfig", "Measurements", "Recommendation", "advise"]
