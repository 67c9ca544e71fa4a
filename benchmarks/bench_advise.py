"""Advisor benchmark: ``slimkit.advise.api(..., verify=True)`` on MiniLM and MobileNetV2 — each
technique's predicted speed-up (Amdahl on measured op-type time shares and the measured int8
GEMM ratio) next to the speed-up measured by a quick trial, and whether the predicted ordering
of techniques matches the measured one (the issue's target).

Usage:
    python benchmarks/bench_advise.py                 # both models
    python benchmarks/bench_advise.py --quick         # MobileNetV2 only (indicative)

Writes ``benchmarks/results/advise.json`` (``advise-quick.json`` with ``--quick``) atomically,
plus ``advice-<model>.json`` files beside it that ``slimkit report`` can turn into HTML.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    from slimkit import load_model
    from slimkit.advise.api import AdviseConfig, advise
    from slimkit.bench.environment import environment
    from slimkit.io import write_text_atomic

    specs = ["builtin:mobilenetv2"] if args.quick else ["builtin:minilm", "builtin:mobilenetv2"]
    RESULTS.mkdir(exist_ok=True)
    results = {}
    for spec in specs:
        advice = advise(load_model(spec), config=AdviseConfig(verify=True, threads=args.threads))
        data = advice.to_dict()
        name = spec.split(":", 1)[1]
        write_text_atomic(RESULTS / f"advice-{name}.json", json.dumps(data, indent=2) + "\n")
        results[name] = {
            "ordering_agrees": data["ordering_agrees"],
            "gemm_ratio_u8s8": data["measurements"]["gemm_ratio_u8s8"],
            "techniques": [{k: r[k] for k in ("technique", "predicted_speedup",
                                              "measured_speedup", "size_ratio", "pays")}
                           for r in data["recommendations"]],
        }
        print(json.dumps(results[name], indent=2), flush=True)
    out = RESULTS / f"advise{'-quick' if args.quick else ''}.json"
    write_text_atomic(out, json.dumps({
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench_advise.py", *sys.argv[1:]]),
        "environment": environment(), "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["ordering_agrees"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
