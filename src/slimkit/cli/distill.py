"""``slimkit distill``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimkit.cli.common import load, model_args
from slimkit.cli.llm_prune import add_distill_arguments

HELP = "train a smaller student to match a teacher (soft targets, hints or embeddings)"


D = "distill."  # flags of DistillConfig's fields
GENERIC_DEFAULTS = {D + "temperature": 4.0, D + "lr": 1e-3, D + "batch_size": 32}  # not LMs'


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)  # MODEL is the teacher
    p.add_argument("-o", "--output", required=True,
                   help="folder to write the student into (load it back with load_model)")
    p.add_argument("--data", required=True, help="training data (labels optional)")
    student = p.add_mutually_exclusive_group(required=True)
    student.add_argument("--student", help="the student model spec")
    student.add_argument("--keep-every", type=int, metavar="K",
                         help="student = the teacher keeping every K-th encoder layer "
                              "(Hugging Face encoders)")
    student.add_argument("--prune-ratio", type=float, metavar="R",
                         help="student = the teacher with R of its channels removed")
    p.add_argument("--val", help="validation data: early stopping and the best student")
    p.add_argument("--loss", dest=D + "loss",
                   default="kd", choices=["kd", "embedding-mse", "embedding-cosine"])
    p.add_argument("--temperature", dest=D + "temperature", type=float,
                   help="softening of both distributions (default 4; causal LMs: 1)")
    p.add_argument("--alpha", dest=D + "alpha",
                   type=float, default=0.9, help="weight of the soft (teacher) term")
    p.add_argument("--hint", action="append", default=[], metavar="STUDENT=TEACHER",
                   dest=D + "features", type=_pair,
                   help="match these layers' outputs (adapters bridge widths; repeatable)")
    p.add_argument("--feature-weight", dest=D + "feature_weight", type=float, default=1.0)
    p.add_argument("--output-adapter", dest=D + "output_adapter", action="store_true",
                   help="learn a Linear from the student's output width to the teacher's")
    p.add_argument("--epochs", dest=D + "epochs", type=int, default=1)
    p.add_argument("--max-steps", dest=D + "max_steps", type=int)
    p.add_argument("--lr", dest=D + "lr", type=float,
                   help="learning rate (default 1e-3; causal LMs: 1e-4)")
    p.add_argument("--optimizer", dest=D + "optimizer",
                   default="adam", choices=["adam", "adamw", "sgd"])
    p.add_argument("--batch-size", dest=D + "batch_size", type=int,
                   help="examples per step (default 32; causal LMs: 4 windows)")
    p.add_argument("--seed", dest=D + "seed", type=int, default=0)
    p.add_argument("--eval-every", dest=D + "eval_every",
                   type=int, default=0, help="steps (0: every epoch)")
    p.add_argument("--patience", dest=D + "patience",
                   type=int, default=0, help="0: never stop early")
    p.add_argument("--checkpoint", help="checkpoint folder")
    p.add_argument("--checkpoint-every", dest=D + "checkpoint_every", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_distill_arguments(p)


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.common import config_from_args
    from slimkit.cli.console import print_mapping
    from slimkit.cli.llm import is_causal_lm_spec
    from slimkit.data import load_data
    from slimkit.distill import DistillConfig, distill, narrow_student, shallow_student
    from slimkit.errors import InputError
    from slimkit.io import check_output_path

    if is_causal_lm_spec(args.model):
        from slimkit.cli.llm_prune import distill_causal_lm

        return distill_causal_lm(args)
    for dest, value in GENERIC_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if args.resume and not args.checkpoint:
        raise InputError("--resume needs --checkpoint FOLDER")
    config = config_from_args(DistillConfig, args, "distill")
    out = Path(args.output)
    check_output_path(out / "x" if out.is_dir() else out)  # fail before the work
    teacher = load(args, args.model)
    plan = None
    if args.keep_every is not None:
        student = shallow_student(teacher, args.keep_every)
    elif args.prune_ratio is not None:
        pruned = narrow_student(teacher, args.prune_ratio, seed=config.seed)
        student, plan = pruned.model, pruned.plan
    else:
        student = load(args, args.student)
    data = load_data(args.data, teacher, split="train", seed=config.seed)
    val = load_data(args.val, teacher, split="val", seed=config.seed) if args.val else None
    result = distill(student, teacher, data, config, val=val, checkpoint=args.checkpoint,
                     resume=args.resume)
    folder = result.save(out, plan)
    if args.json:
        print(json.dumps(result.sections, indent=2, default=str))
        return
    v = result.sections["validation"]
    rows = {"steps": result.sections["steps"], "examples": result.sections["examples"],
            "final loss": result.sections["loss"][-1]["loss"] if result.sections["loss"]
            else None, "stopped early": result.sections["stopped_early"],
            "cpu seconds": result.sections["cpu_seconds"]}
    if v["metric"]:
        rows.update({f"validation {v['metric']} before": v["before"],
                     f"validation {v['metric']} after": v["after"]})
    print_mapping(f"distilled {student.name} from {teacher.name} -> {folder}", rows)


def _pair(text: str) -> tuple[str, str]:
    student, sep, teacher = text.partition("=")
    if not sep or not student or not teacher:
        raise argparse.ArgumentTypeError(f"'{text}' must be STUDENT_LAYER=TEACHER_LAYER")
    return student, teacher
