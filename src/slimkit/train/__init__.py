"""The one training core: the loop (``loop``: optimizers, schedules, batch order, hooks for
losses, teachers and masks), fine-tuning a copy of a model (``finetune``), BatchNorm
recalibration (``batchnorm``), schedules over steps (``schedules``), checkpoints
(``checkpoint``) and data-parallel training with torch DDP (``ddp``, ``replica``)."""

from slimkit.train.finetune import finetune
from slimkit.train.hooks import FinetuneConfig, TrainHooks, TrainResult
from slimkit.train.loop import TrainBatch, TrainConfig, Trainer, fit

__all__ = ["FinetuneConfig", "TrainBatch", "TrainConfig", "TrainHooks", "TrainResult", "Trainer",
           "finetune", "fit"]
