"""The README and docs/ stay true: the README's marked command blocks run, every config of its task table passes
`ptrain check`, every relative link resolves, every test the pages cite exists, and CI runs the test command the
README gives.

A fenced block in README.md preceded by `<!-- readme-test -->` is run line by line (a trailing backslash continues
a line; comments and blank lines are skipped) in a fresh folder holding `configs/` (a link to the repository's)
and `reviews.csv`, the user's data the README's own-data example names. A block preceded by
`<!-- readme-test: FILE -->` is written to FILE there instead. `ptrain ...` lines run as `python -m ptrain ...`
through `run_cli`, with the shell's globbing and quoting; `ptrain train` gets TRAIN_OVERRIDES appended so that it
trains two steps. GitHub renders the markers as nothing.
"""

from __future__ import annotations

import ast
import csv
import random
import re
import subprocess
from pathlib import Path

import pytest

from ptrain.tasks import TASKS
from tests.conftest import CONFIGS, REPO, run_cli

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]
MARKER = re.compile(r"^<!-- readme-test(?::\s*(?P<file>\S+))?\s*-->$")
TRAIN_OVERRIDES = ["train.max_steps=2", "train.checkpoint_at_epoch_end=false"]


def marked_blocks(text: str) -> list[tuple[int, str | None, str]]:
    """(line number of the marker, file to write or None to run, the block's text) for every marked fenced block."""
    lines, blocks = text.splitlines(), []
    for number, line in enumerate(lines):
        marker = MARKER.match(line.strip())
        if not marker:
            continue
        start = number + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        assert start < len(lines) and lines[start].startswith("```"), f"README.md:{number + 1}: marker without a block"
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        blocks.append((number + 1, marker["file"], "\n".join(lines[start + 1 : end]) + "\n"))
    return blocks


def commands(block: str) -> list[str]:
    """The block's command lines: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def write_reviews(path: Path, rows: int = 48) -> None:
    """A small two-label review file: the user's CSV of the README's own-data example."""
    words = {"positive": ["loved it", "a joy", "superb acting"], "negative": ["boring", "a waste", "awful plot"]}
    chosen = random.Random(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        for row in range(rows):
            label = chosen.choice(sorted(words))
            writer.writerow([f"{chosen.choice(words[label])}, review {row}", label])


def run_line(line: str, cwd: Path, cache: Path) -> tuple[int, str]:
    """Run one README command line in cwd; its exit status and the end of its error output."""
    if not line.startswith("ptrain "):
        result = subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=300)
        return result.returncode, result.stderr[-3000:]
    expanded = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], cwd=cwd, capture_output=True, text=True)
    assert expanded.returncode == 0, expanded.stderr
    args = expanded.stdout.split("\0")[1:-1]  # without `ptrain` and the empty tail
    if args[0] == "train":
        args += [*TRAIN_OVERRIDES, f"data.cache_dir={cache}"]
    result = run_cli(*args, cwd=cwd)
    return result.returncode, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.end_to_end
def test_the_readme_command_blocks_run(tmp_path, cache_dir):
    blocks = marked_blocks(README.read_text())
    assert any(file is None for _, file, _ in blocks), "README.md has no <!-- readme-test --> block"
    (tmp_path / "configs").symlink_to(CONFIGS)
    write_reviews(tmp_path / "reviews.csv")
    for number, file, text in blocks:
        if file is not None:
            (tmp_path / file).write_text(text)
            continue
        for line in commands(text):
            status, errors = run_line(line, tmp_path, cache_dir)
            assert status == 0, f"README.md:{number} block: `{line}` exited {status}\n{errors}"


def task_table_configs() -> list[str]:
    """The configs named in the README's table of tasks (the section `## Tasks`)."""
    section = README.read_text().split("\n## Tasks\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return sorted({name for row in rows for name in re.findall(r"configs/([\w.-]+\.yaml)", row)})


def test_the_task_table_names_every_shipped_config_and_every_task():
    assert task_table_configs() == sorted(path.name for path in CONFIGS.glob("*.yaml"))
    section = README.read_text().split("\n## Tasks\n", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in TASKS if f"[`{name}`](docs/tasks/{name}.md)" not in section]
    assert not missing, f"README task table lacks {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("name", task_table_configs())
def test_each_config_of_the_task_table_passes_check(name):
    result = run_cli("check", f"configs/{name}")
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_task_section_key_is_on_its_task_page():
    """A task's own keys (its config section) are documented on docs/tasks/<task>.md."""
    missing = []
    for name, task in TASKS.items():
        page = REPO / "docs" / "tasks" / f"{name}.md"
        text = page.read_text() if page.is_file() else ""
        missing += [f"{name}.{key}" for key in task.Options.model_fields if f"`{name}.{key}`" not in text]
        missing += [] if text else [str(page.relative_to(REPO))]
    assert not missing, f"task pages lack {missing}"


def without_code(text: str) -> list[str]:
    """The page's lines outside fenced blocks, with inline code spans removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as hyphens, repeats
    numbered."""
    found, counts, fenced = set(), {}, False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            found.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
            counts[slug] = counts.get(slug, 0) + 1
    return found


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for line in without_code(page.read_text()):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                resolved = (page.parent / path).resolve() if path else page
                if not resolved.exists():
                    broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
                elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_test_the_pages_cite_exists():
    """`tests/test_x.py::test_name` on a page (the reliability promises and the tests that hold them) names a real
    test; a bare `tests/test_x.py` names a real file."""
    text = "\n".join(page.read_text() for page in PAGES)
    cited = set(re.findall(r"(tests/test_\w+\.py)::(test_\w+)", text))
    assert cited
    missing = []
    for path, name in sorted(cited):
        tree = ast.parse((REPO / path).read_text()) if (REPO / path).is_file() else ast.Module(body=[])
        if name not in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}:
            missing.append(f"{path}::{name}")
    missing += [path for path in set(re.findall(r"tests/\w+\.py", text)) if not (REPO / path).is_file()]
    assert not missing, f"pages cite tests that do not exist: {sorted(missing)}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README.read_text()
    assert "make test" in (REPO / ".ci" / "run").read_text()
