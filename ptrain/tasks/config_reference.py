"""Writes the config reference, docs/config.md, from the schema and every registered task's section:
`make docs`, which runs `python -m ptrain.tasks.config_reference docs/config.md` (without a path it prints the page).
It lives above the config layer because the task sections are declared in the task modules."""

from __future__ import annotations

import sys
from pathlib import Path

from ptrain.config.reference_page import reference_page
from ptrain.tasks import TASKS

COMMAND = "make docs"
PAGE = "docs/config.md"


def current_page() -> str:
    """The page as the schema and the registered tasks describe it now."""
    return reference_page([(task.name, task.Options) for task in TASKS.values()], COMMAND)


def main(argv: list[str]) -> None:
    page = current_page()
    if argv:
        Path(argv[0]).write_text(page, encoding="utf-8")
    else:
        sys.stdout.write(page)


if __name__ == "__main__":
    main(sys.argv[1:])
