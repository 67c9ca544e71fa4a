"""Print the README's Nth command of its "Two commands" section (N = 1 or 2), so CI runs what
a new user reads, verbatim, and the two cannot drift apart."""

from __future__ import annotations

import re
import sys
from pathlib import Path

SECTION = "## Two commands"


def readme_commands(text: str) -> list[str]:
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


if __name__ == "__main__":
    commands = readme_commands((Path(__file__).parents[1] / "README.md").read_text())
    if len(commands) != 2:
        sys.exit(f"README's '{SECTION}' has {len(commands)} bash blocks, not 2")
    print(commands[int(sys.argv[1]) - 1])
