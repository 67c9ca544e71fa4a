"""Knowledge distillation: soft targets + hard labels, hint losses with learned adapters,
embedding distillation for encoders (no labels), checkpoint/resume, early stopping; and
students made from the teacher (shallower transformers, narrower pruned models)."""

import sys
import types
from typing import Any

from slimkit.distill.api import DistillResult, build_adapters, distill, finetune_loss
from slimkit.distill.config import DistillConfig
from slimkit.distill.losses import LOSSES, embedding_cosine, embedding_mse, kd_loss, soft_kl
from slimkit.distill.save import save_student
from slimkit.distill.student import kept_layers, narrow_student, shallow_student

__all__ = ["LOSSES", "DistillConfig", "DistillResult", "build_adapters", "distill",
           "embedding_cosine", "embedding_mse", "finetune_loss", "kd_loss", "kept_layers",
           "narrow_student", "save_student", "shallow_student", "soft_kl"]


class _CallableModule(types.ModuleType):
    """``slimkit.distill`` is both this package and the verb: once the package is imported,
    Python binds the package as the ``slimkit.distill`` attribute, so the package itself must
    be callable (module ``__class__`` assignment, see the data model's "Customizing module
    attribute access")."""

    def __call__(self, *args: Any, **kwargs: Any) -> DistillResult:
        return distill(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
