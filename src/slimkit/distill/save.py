"""Writing a distilled student where ``slimkit.load_model`` reads it back, never as a pickle:

- a Hugging Face encoder/classifier (also a shallow student): a Hugging Face folder
  (config.json with the new depth, safetensors, tokenizer), built in a temporary folder and
  renamed into place;
- a low-rank model: its low-rank plan + safetensors (``slimkit.lowrank``);
- any other torch model: a pruning-plan folder (plan + safetensors); the plan is the one that
  made the student (given, or read from the folder it was loaded from) or an empty one that
  rebuilds the architecture from the recorded source.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from slimkit.errors import OutputPathError
from slimkit.io import check_output_path
from slimkit.model import Model


def save_student(model: Model, folder: str | Path, plan: Any = None) -> Path:
    """Write ``model`` into ``folder``; returns the folder.

    Args:
        model: the (distilled) student.
        folder: the output folder; a Hugging Face student needs it new or empty.
        plan: the ``PrunePlan`` that made a pruned student (not needed when the student was
            loaded from a pruned folder, whose plan is reused).

    Example:
        >>> import tempfile
        >>> from slimkit import load_model
        >>> m = load_model("builtin:resnet18-cifar")
        >>> out = save_student(m, tempfile.mkdtemp() + "/student")
        >>> load_model(str(out)).module.fc.out_features
        10
    """
    module = model.require_module("saving a student")
    out = Path(folder)
    if "lowrank_plan" in model.meta:  # first: a factorised HF model is no HF model any more
        from slimkit.lowrank.save import save_lowrank

        return save_lowrank(model, out)
    if hasattr(getattr(module, "model", None), "save_pretrained"):
        return _save_hf(model, out)
    from slimkit.prune.save import save_pruned

    return save_pruned(model, plan or _plan_of(model), out).parent


def _plan_of(model: Model) -> Any:
    from slimkit.graph.plan import PrunePlan
    from slimkit.prune.save import PLAN_FILE, is_pruned_folder

    source = Path(model.source)
    if is_pruned_folder(source):
        document = json.loads((source / PLAN_FILE).read_text(encoding="utf-8"))
        return PrunePlan.from_dict(document)
    return PrunePlan("structured", {"name": model.name, "source": model.source,
                                    "inputs": [s.to_dict() for s in model.inputs]},
                     {}, extra={"note": "no channels removed: the architecture of the source "
                                        "with distilled weights"})


def _save_hf(model: Model, out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputPathError(f"'{out}' exists and is not an empty folder; a Hugging Face "
                              "student is written into a new folder: choose another path")
    check_output_path(out / "config.json" if out.is_dir() else out)
    module: Any = model.module
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        module.model.save_pretrained(tmp, safe_serialization=True)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        from slimkit.load.hf import declare_pooling

        declare_pooling(model, tmp)  # an embedding student loads back as one
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; give the usual folder mode
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return out

