"""The config reference page (docs/config.md), rendered from the schema: a table per section with each dotted key's
type, default and description (its Field description). Pure: it reads the classes it is given, so the task
sections come in as arguments (ptrain/tasks/config_reference.py writes the page)."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ptrain.config.inherit import BASE_KEY
from ptrain.config.schema import Config

Sections = Sequence[tuple[str, type[BaseModel]]]
CORE_SECTIONS = ("data", "model", "train")
BOUNDS = {
    annotated_types.Gt: (">", "gt"),
    annotated_types.Ge: (">=", "ge"),
    annotated_types.Lt: ("<", "lt"),
    annotated_types.Le: ("<=", "le"),
}


def reference_page(task_sections: Sections, command: str) -> str:
    """The whole page: top-level keys, the data, model and train sections, then each task's own section."""
    tasks = ", ".join(f"`{name}`" for name, _ in task_sections)
    lines = [
        "# Config reference",
        "",
        f"Generated from the config classes' field descriptions by `{command}`; do not edit it by hand: change a",
        "description in the schema (ptrain/config/, a task's `Options` in ptrain/tasks/) and regenerate.",
        "",
        "Every key is written dotted: `train.learning_rate` is `learning_rate:` under `train:` in the YAML, and",
        "`train.learning_rate=3e-5` overrides it on the command line. `null` is YAML's none; `a | b` in a type means",
        "either; a `section` holds the keys listed after it. Bounds follow the type, e.g. `int (> 0)`.",
        "",
        "## Top-level keys",
        "",
        *table(section_rows(Config, skip=CORE_SECTIONS)),
        "",
        f"The `task` key names one of the tasks: {tasks}. `{BASE_KEY}` (not a field: read before validation, and not "
        "kept in the resolved config) names a base config file or a list of them, relative to this file; this file's "
        "keys go over theirs, later bases over earlier ones.",
    ]
    for name in CORE_SECTIONS:
        field = Config.model_fields[name]
        lines += ["", f"## {name}", "", one_line(field.description), "", *table(section_rows(section_of(field), name))]
    keyless = [name for name, options in task_sections if not options.model_fields]
    lines += ["", "## Task sections", "", "A config holds only the section of its own `task` (defaults when absent)."]
    if keyless:
        lines[-1] += " " + ", ".join(f"`{name}`" for name in keyless) + " have no keys of their own."
    for name, options in task_sections:
        if options.model_fields:
            lines += ["", f"### {name}", "", f"With `task: {name}`.", "", *table(section_rows(options, name))]
    return "\n".join(lines).rstrip("\n") + "\n"


def section_rows(model: type[BaseModel], prefix: str = "", skip=()) -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) of every key of `model` but `skip`, a nested section's keys after
    its own."""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}.{name}" if prefix else name
        yield key, type_text(field), default_text(field), one_line(field.description)
        nested = section_of(field)
        if nested is not None:
            yield from section_rows(nested, key)


def table(rows) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, type_, default, description in rows:
        cells = (f"`{key}`", f"`{type_}`", default if default == "required" else f"`{default}`", description)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def section_of(field: FieldInfo) -> type[BaseModel] | None:
    """The section class a field holds (alone or in a union with None), or None for a plain value."""
    for candidate in (field.annotation, *get_args(field.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def type_text(field: FieldInfo) -> str:
    bounds = [
        f"{BOUNDS[type(item)][0]} {getattr(item, BOUNDS[type(item)][1])}"
        for item in field.metadata
        if type(item) in BOUNDS
    ]
    return annotation_text(field.annotation) + (f" ({', '.join(bounds)})" if bounds else "")


def annotation_text(annotation: Any) -> str:
    """A type as a YAML writer reads it: choices quoted, None as null, a nested section as `section`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is None or annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is Literal:
        return " | ".join(json.dumps(value) for value in args)
    if origin in (Union, types.UnionType):
        return " | ".join(annotation_text(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(annotation_text(arg) for arg in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in YAML; `required` for a key without one."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "{}"  # a section present by default: each key at its own default
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value)


def one_line(text: str | None) -> str:
    """A description as one table cell: whitespace collapsed; a `<name>` placeholder outside code spans escaped, so
    Markdown shows it rather than taking it for an HTML tag."""
    parts = " ".join((text or "").split()).split("`")
    return "`".join(part if inside else part.replace("<", "&lt;") for part, inside in zip(parts, [0, 1] * len(parts)))
