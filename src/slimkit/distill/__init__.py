"""Knowledge distillation: soft targets + hard labels, hint losses with learned adapters,
embedding distillation for encoders (no labels), checkpoint/resume, early stopping; and
students made from the teacher (shallower transformers, narrower pruned models)."""

from slimkit.distill.api import DistillResult, build_adapters, distill, finetune_loss
from slimkit.distill.config import DistillConfig
from slimkit.distill.losses import LOSSES, embedding_cosine, embedding_mse, kd_loss, soft_kl
from slimkit.distill.save import save_student
from slimkit.distill.student import kept_layers, narrow_student, shallow_student

__all__ = ["LOSSES", "DistillConfig", "DistillResult", "build_adapters", "distill",
           "embedding_cosine", "embedding_mse", "finetune_loss", "kd_loss", "kept_layers",
           "narrow_student", "save_student", "shallow_student", "soft_kl"]

