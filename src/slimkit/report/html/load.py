"""Reading a run folder: the ``report.json`` of a run (``slimkit demo``, ``compress``) plus the
reports single commands leave beside their outputs (``*.report.json`` of ``slimkit quantize``,
``diff.json``, ``advice.json``...), merged into one document of named sections."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.errors import InputError

REPORT_FORMAT = "slimkit-report"
REPORT_VERSION = 1  # keep equal to slimkit.report.document.REPORT_VERSION
MAX_JSON_BYTES = 64 * 2**20


@dataclass
class RunDocument:
    """What the HTML report is built from: a title, named sections and their context."""

    title: str
    sections: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    seed: Any = None
    created: str | None = None
    sources: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_report(cls, data: dict[str, Any], source: str = "report") -> RunDocument:
        """A document from a ``Report.to_dict()``; another version's layout is marked."""
        if not isinstance(data, dict) or not isinstance(data.get("sections"), dict):
            raise InputError(f"'{source}' is not a slimkit report: it has no 'sections' object")
        if data.get("format", REPORT_FORMAT) != REPORT_FORMAT:
            raise InputError(f"'{source}' is a '{data.get('format')}' file, not a slimkit "
                             "report")
        env = data.get("environment")
        doc = cls(str(data.get("title") or "slimkit report"), dict(data["sections"]),
                  env if isinstance(env, dict) else {}, data.get("seed"), data.get("created"),
                  [source])
        version = data.get("version")
        if version is not None and version != REPORT_VERSION:
            doc.warnings.append(
                f"{source} was written by a slimkit with report format version {version}; this "
                f"one reads version {REPORT_VERSION}: sections it does not recognise are shown "
                "as plain tables and marked")
        return doc


def load_run(folder: str | Path) -> RunDocument:
    """Merge every slimkit report of ``folder`` into one document.

    Raises InputError when the folder does not exist or holds no slimkit report at all; a file
    that cannot be read is listed in the document's warnings and skipped.

    Example:
        >>> import json, tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "report.json").write_text(json.dumps({"title": "t", "sections": {"a": 1}}))
        >>> load_run(d).sections
        {'a': 1}
    """
    root = Path(folder).expanduser()
    if root.is_file():
        return _from_file(root)
    if not root.is_dir():
        raise InputError(f"run folder '{root}' does not exist")
    main = root / "report.json"
    doc = _from_file(main) if main.is_file() else RunDocument(f"slimkit run {root.name}")
    if not main.is_file():
        doc.warnings.append(f"no report.json in '{root}': only the single-command reports found "
                            "there are shown")
    for path in sorted(root.glob("*.json")):
        if path == main or not path.name.endswith((".report.json", "diff.json", "advice.json")):
            continue
        try:
            data = _read_json(path)
        except InputError as exc:
            doc.warnings.append(str(exc))
            continue
        _merge(doc, data, path)
    if not doc.sections and not main.is_file():
        raise InputError(f"'{root}' holds no slimkit report (report.json, *.report.json, "
                         "diff.json or advice.json)")
    return doc


def _from_file(path: Path) -> RunDocument:
    data = _read_json(path)
    if path.name == "report.json" or (isinstance(data, dict) and "sections" in data):
        return RunDocument.from_report(data, path.name)
    doc = RunDocument(f"slimkit report: {path.name}")
    _merge(doc, data, path)
    return doc


def _read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InputError(f"'{path}' is larger than {MAX_JSON_BYTES >> 20} MiB: not a report")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"'{path}' is not valid JSON ({exc}); was it cut short?") from None
    except OSError as exc:
        raise InputError(f"cannot read '{path}': {exc.strerror}") from None


def _merge(doc: RunDocument, data: Any, path: Path) -> None:
    if isinstance(data, dict) and isinstance(data.get("sections"), dict):
        sub = RunDocument.from_report(data, path.name)
        for name, content in sub.sections.items():
            doc.sections[_free_name(doc.sections, name)] = content
        doc.warnings += sub.warnings
        doc.environment = doc.environment or sub.environment
        doc.seed = sub.seed if doc.seed is None else doc.seed
    else:
        doc.sections[_free_name(doc.sections, section_kind(data, path))] = data
        if doc.seed is None and isinstance(data, dict) and isinstance(data.get("seed"), int):
            doc.seed = data["seed"]
    doc.sources.append(path.name)


def section_kind(data: Any, path: Path) -> str:
    """Which renderer a single-command report belongs to (by its ``kind`` or its shape)."""
    if isinstance(data, dict):
        if isinstance(data.get("kind"), str):
            return str(data["kind"])
        if "preflight" in data and "metric" in data:
            return "quantize"
        if "groups" in data or "sparsity" in data:
            return "prune"
    return path.name.removesuffix(".json").removesuffix(".report")


def _free_name(sections: dict[str, Any], name: str) -> str:
    candidate, n = name, 2
    while candidate in sections:
        candidate, n = f"{name} ({n})", n + 1
    return candidate
