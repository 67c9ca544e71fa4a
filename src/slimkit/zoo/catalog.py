"""The built-in zoo, ``builtin:NAME``: digits models trained on first use and cached, reference
architectures at random init for speed work, and all-MiniLM-L6-v2 when its package is present."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from slimkit.io import cache_dir
from slimkit.load.formats import LoadOptions, ModelFormat, register_format
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec
from slimkit.registry import Registry
from slimkit.zoo import architectures as arch

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


def zoo_names() -> list[str]:
    return [*ZOO.names(), "minilm", "smollm2"]


def load_builtin(name: str, seed: int = 0) -> Model:
    """Build (and, for digits models, train once and cache) ``builtin:NAME``."""
    if name == "minilm":
        from slimkit.load.hf import load_hf_folder, minilm_folder

        return load_hf_folder(minilm_folder(), name="minilm")
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
    from slimkit.zoo.digits import train_digits

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


def _read(spec: str, path: Path, options: LoadOptions) -> Model:
    return load_builtin(spec.split(":", 1)[1], seed=options.seed)


FORMAT = register_format(ModelFormat("builtin", lambda spec, _: spec.startswith("builtin:"),
                                     _read, 10))
