"""Keep docs/results.md up to date: each benchmark owns one ``## section`` and rewrites it."""

from __future__ import annotations

import os
import platform
import re
import sys
from datetime import date
from pathlib import Path

from avloc.atomic import atomic_path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results.md"
HEADER = "# Measured results\n\nEvery number here was printed by the command given beside it.\n"


def machine() -> str:
    """One line describing where a number was measured."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def command() -> str:
    """The command line that is running, as a user would type it."""
    return " ".join(["python", *sys.argv])


def update_section(title: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``## title`` of ``path`` with ``body``."""
    text = path.read_text() if path.exists() else HEADER
    section = f"## {title}\n\n_Measured {date.today().isoformat()} on {machine()}._\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    with atomic_path(path) as tmp:
        tmp.write_text(text)
