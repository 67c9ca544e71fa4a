"""Data-parallel fine-tuning with ``torch.distributed`` (DDP): several processes, each training
on its share of every batch, gradients averaged by all-reduce (gloo on CPU, nccl on GPUs).

``finetune_ddp`` (or ``FinetuneConfig(workers=N)`` anywhere ``finetune`` runs: recipes, the
search, ``slimkit prune --finetune-workers N``) launches the worker processes itself; under a
user's own ``torchrun`` the same call joins the job torchrun started (``launch``). What each
worker does, in both cases, lives in ``replica``.

Names are imported lazily: importing ``slimkit.distributed`` loads neither torch nor NumPy.
"""

from __future__ import annotations

from slimkit._lazy import lazy_exports

# public name -> module that defines it
_API = {
    "finetune_ddp": "slimkit.distributed.launch",
    "launched_by_torchrun": "slimkit.distributed.launch",
}

__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API, globals())
