"""Training the built-in digits models (once; ``catalog`` caches the weights): Adam with weight
decay and a cosine schedule, in the one training loop of ``slimkit.train``."""

from __future__ import annotations

import numpy as np
import torch

from slimkit.data import Dataset
from slimkit.model import DYNAMIC_BATCH, Model, TensorSpec
from slimkit.train.loop import TrainConfig, Trainer
from slimkit.zoo import architectures as arch


def train_digits(module: torch.nn.Module, *, seed: int = 0, epochs: int = 30,
                 batch_size: int = 64) -> dict[str, object]:
    """Train ``module`` on the digits train split (in place); return the val/test accuracy
    and the settings."""
    from slimkit.data.digits import digits_splits

    splits = digits_splits()
    flat = isinstance(module, arch.DigitsMLP)

    def shaped(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.reshape(len(x), -1) if flat else x)

    x, y = splits["train"]
    data = Dataset({"input": shaped(x)}, y)
    model = Model("digits", "zoo", (TensorSpec("input", (DYNAMIC_BATCH, *data.inputs["input"]
                                                         .shape[1:])),), module=module)
    config = TrainConfig(epochs, 3e-3, batch_size=batch_size, weight_decay=1e-4, seed=seed)
    Trainer(model, data, config, description="training digits model").run()
    result: dict[str, object] = {"trained_epochs": epochs, "seed": seed}
    with torch.no_grad():
        for split in ("val", "test"):
            xs, ys = splits[split]
            logits = module(torch.from_numpy(shaped(xs)))
            result[f"{split}_accuracy"] = float((logits.argmax(1).numpy() == ys).mean())
    return result
