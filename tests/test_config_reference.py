"""docs/config.md is the schema's own description: regenerated in memory it matches the committed page, and
every key of the config (task sections included) has a description to show there."""

from __future__ import annotations

import subprocess
import sys

from pydantic import BaseModel

from ptrain.config.reference_page import reference_page, section_rows
from ptrain.config.schema import config_class
from ptrain.tasks import TASKS
from ptrain.tasks.config_reference import PAGE, current_page
from tests.conftest import REPO


def test_the_config_reference_is_current():
    committed = (REPO / PAGE).read_text(encoding="utf-8")
    assert committed == current_page(), (
        f"{PAGE} is stale: the schema's descriptions changed; regenerate it with `make docs` "
        f"(python -m ptrain.tasks.config_reference {PAGE}) and commit it"
    )


def undescribed(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys of `model` and the sections it holds whose Field has no description."""
    missing = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if not (field.description or "").strip():
            missing.append(key)
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                missing += undescribed(candidate, f"{key}.")
    return missing


def test_every_config_key_has_a_description():
    sections = tuple((task.name, task.Options) for task in TASKS.values())
    missing = undescribed(config_class(sections))
    assert not missing, f"config keys without a Field(description=...): {missing}"


def test_the_page_flattens_sections_and_lists_choices():
    rows = {key: (type_, default) for key, type_, default, _ in section_rows(config_class(()))}
    assert rows["model.lora.r"] == ("int (> 0)", "8")  # a nested section's keys, dotted, with their bounds
    assert rows["data.bad_rows"] == ('"stop" | "skip"', "stop")  # a Literal's choices
    assert rows["name"] == ("str", "required")
    page = reference_page([(task.name, task.Options) for task in TASKS.values()], "make docs")
    assert "| `causal_lm.block_size` | `int (> 1)` | `128` |" in page  # a task's own section
    keyless = ", ".join(f"`{task.name}`" for task in TASKS.values() if not task.Options.model_fields)
    assert f"{keyless} have no keys of their own" in page


def test_the_renderer_imports_no_torch():
    """The config layer stays light: rendering the page needs pydantic only (the task sections come in as classes)."""
    code = "import sys, ptrain.config.reference_page; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False"
