"""The built-in zoo, ``builtin:NAME``: digits models trained on first use and cached, reference
architectures at random init for speed work, and all-MiniLM-L6-v2 when its package is present."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from slimkit.load import architectures as arch
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec
from slimkit.registry import Registry

CACHE_ENV = "SLIMKIT_CACHE_DIR"
DIGITS_VERSION = 2  # 2: digits-mlp is LeNet-300-100 (64-300-100-10)


@dataclass(frozen=True)
class ZooEntry:
    factory: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]  # without the batch axis
    task: Task = Task.CLASSIFICATION
    trained_on_digits: bool = False
    description: str = ""


ZOO: Registry[ZooEntry] = Registry("built-in model")
ZOO.register("digits-mlp")(ZooEntry(arch.DigitsMLP, (64,), trained_on_digits=True,
                                    description="LeNet-300-100 (64-300-100-10) on 8x8 digits, "
                                                "trained on first use"))
ZOO.register("digits-cnn")(ZooEntry(arch.DigitsCNN, (1, 8, 8), trained_on_digits=True,
                                    description="CNN on 8x8 digits, trained on first use"))
ZOO.register("resnet18")(ZooEntry(arch.ResNet18, (3, 224, 224),
                                  description="ResNet-18, ImageNet layout, random init"))
ZOO.register("resnet18-cifar")(ZooEntry(lambda: arch.ResNet18(classes=10, cifar=True),
                                        (3, 32, 32), description="ResNet-18, CIFAR stem"))
ZOO.register("mobilenetv2")(ZooEntry(arch.MobileNetV2, (3, 224, 224),
                                     description="MobileNetV2, random init"))


def cache_dir() -> Path:
    """Where trained zoo weights are kept: ``$SLIMKIT_CACHE_DIR`` or the user cache folder."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("slimkit"))


def zoo_names() -> list[str]:
    return [*ZOO.names(), "minilm", "smollm2"]


def load_builtin(name: str, seed: int = 0) -> Model:
    """Build (and, for digits models, train once and cache) ``builtin:NAME``."""
    if name == "minilm":
        from slimkit.load.hf import load_minilm

        return load_minilm()
    if name == "smollm2":
        from slimkit.llm.load import load_smollm2

        return load_smollm2()
    entry = ZOO.get(name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = entry.factory()
    meta: dict[str, object] = {"description": entry.description}
    if entry.trained_on_digits:
        meta.update(_trained_digits(name, module, seed))
    module.eval()
    spec = TensorSpec("input", (DYNAMIC_BATCH, *entry.input_shape))
    return Model(name=name, source=f"builtin:{name}", module=module, inputs=(spec,),
                 output_names=("logits",), task=entry.task, meta=meta)


def _trained_digits(name: str, module: torch.nn.Module, seed: int) -> dict[str, object]:
    from safetensors.torch import load_file, save_file

    from slimkit.io import atomic_path

    path = cache_dir() / "zoo" / f"{name}-v{DIGITS_VERSION}-seed{seed}.safetensors"
    if path.is_file():
        try:
            module.load_state_dict(load_file(str(path)))
            return json.loads(path.with_suffix(".json").read_text())
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    info = train_digits(module, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info))
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
    return info


def train_digits(module: torch.nn.Module, *, seed: int = 0, epochs: int = 30,
                 batch_size: int = 64) -> dict[str, object]:
    """Train ``module`` on the digits train split (Adam, cosine schedule).

    Returns the val/test accuracy and the settings.
    """
    from slimkit.data.digits import digits_splits
    from slimkit.progress import progress

    splits = digits_splits()
    x, y = (torch.from_numpy(a) for a in splits["train"])
    flat = isinstance(module, arch.DigitsMLP)
    reshape = (lambda t: t.reshape(len(t), -1)) if flat else (lambda t: t)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    module.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in progress(range(epochs), "training digits model", total=epochs):
            for idx in torch.randperm(len(x), generator=generator).split(batch_size):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(module(reshape(x[idx])), y[idx])
                loss.backward()
                opt.step()
            sched.step()
    module.eval()
    result: dict[str, object] = {"trained_epochs": epochs, "seed": seed}
    with torch.no_grad():
        for split in ("val", "test"):
            xs, ys = splits[split]
            logits = module(reshape(torch.from_numpy(xs)))
            result[f"{split}_accuracy"] = float((logits.argmax(1).numpy() == ys).mean())
    return result

