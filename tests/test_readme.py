"""The README stays true: every config key is documented, every test it cites exists, and CI runs the test command
it gives."""

from __future__ import annotations

import ast
import re

from pydantic import BaseModel

from ptrain.config import Config
from ptrain.tasks import TASKS
from tests.conftest import REPO


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += config_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_every_config_key_is_in_the_reference_table():
    readme = (REPO / "README.md").read_text()
    keys = config_keys() + [key for task in TASKS.values() for key in config_keys(task.Options, f"{task.name}.")]
    first_cells = [line.split(" | ")[0] for line in readme.splitlines() if line.startswith("| `")]
    missing = [key for key in keys if not any(f"`{key}`" in cell for cell in first_cells)]
    assert not missing, f"README config reference lacks {missing}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / "README.md").read_text()
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_test_the_readme_cites_exists():
    """`tests/test_x.py::test_name` in the README (its promises and the tests that show them) names a real test."""
    cited = set(re.findall(r"(tests/test_\w+\.py)::(test_\w+)", (REPO / "README.md").read_text()))
    assert cited
    missing = []
    for path, name in sorted(cited):
        tree = ast.parse((REPO / path).read_text()) if (REPO / path).is_file() else ast.Module(body=[])
        if name not in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}:
            missing.append(f"{path}::{name}")
    assert not missing, f"README cites tests that do not exist: {missing}"
