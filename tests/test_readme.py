"""The README stays true: every config key is documented, and CI runs the test command it gives."""

from __future__ import annotations

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
