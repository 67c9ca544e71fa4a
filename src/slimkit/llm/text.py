"""Real English text for perplexity and calibration, shipped with Python itself.

``builtin:python-reference`` is the prose of the Python Language Reference as CPython ships it
for ``help()`` (``pydoc_data.topics``: 79 sections written by people, about 110k tokens; the
grammar and code blocks, indented in that text, are left out). Sections are split by a fixed
rule into an *evaluation* part (every fourth section, sorted by name) and a disjoint
*calibration* part (the rest), so a method calibrated on one is judged on the other. The text
differs slightly between Python versions: results record ``sys.version``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from slimkit.errors import DataError

BUILTIN = "builtin:python-reference"
SPLITS = ("evaluation", "calibration")
_UNDERLINE = re.compile(r"^[*=\-~^\"]{3,}$")


@dataclass(frozen=True)
class Text:
    """A text and where it came from (recorded in every result that uses it)."""

    text: str
    source: str
    split: str | None = None

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = {"source": self.source, "characters": len(self.text)}
        if self.split:
            info["split"] = self.split
        if self.source.startswith("builtin:"):
            info["python"] = sys.version.split()[0]
        return info


def load_text(spec: str) -> Text:
    """``builtin:python-reference[:evaluation|calibration]`` (default: evaluation) or a UTF-8
    text file.

    Example:
        >>> t = load_text("builtin:python-reference")
        >>> t.split, len(t.text) > 50_000
        ('evaluation', True)
    """
    if spec.startswith("builtin:"):
        name, _, split = spec.partition(":")[2].partition(":")
        if name != BUILTIN.split(":")[1]:
            raise DataError(f"unknown built-in text '{spec}'; use {BUILTIN}[:evaluation|"
                            "calibration] or a .txt file")
        return python_reference(split or "evaluation")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"text file '{path}' does not exist; give a UTF-8 .txt file or "
                        f"{BUILTIN}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read '{path}' as UTF-8 text ({type(exc).__name__})") from None
    if not text.strip():
        raise DataError(f"text file '{path}' is empty")
    return Text(text, str(path))


def python_reference(split: str = "evaluation") -> Text:
    """The evaluation or calibration part of the Python Language Reference prose."""
    if split not in SPLITS:
        raise DataError(f"split '{split}' is not one of {list(SPLITS)}")
    from pydoc_data.topics import topics

    names = sorted(topics)
    chosen = [n for i, n in enumerate(names) if (i % 4 == 0) == (split == "evaluation")]
    text = "\n\n".join(prose(topics[n]) for n in chosen)
    return Text(text, BUILTIN, split)


def prose(section: str) -> str:
    """``section`` without its indented blocks (grammar, code) and heading underlines."""
    lines = [line for line in section.splitlines()
             if not line.startswith(" ") and not _UNDERLINE.match(line.strip())]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
