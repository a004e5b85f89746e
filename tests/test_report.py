"""`ptrain report RUN` on a tiny emotion run: report.md with every section, and PNGs that exist and open; the
data part also in the run's TensorBoard."""

from __future__ import annotations

import re

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ptrain.errors import ConfigError
from ptrain.experiments.report import write_report
from tests.conftest import run_cli, train_tiny

SECTIONS = [
    "## Data",
    "## Training curves",
    "## Validation scores",
    "### Confusion matrix",
    "### Per class",
    "### Highest loss",
    "### Lowest loss",
    "### Most confused pairs",
    "## Hyperparameters",
    "## Hardware",
]


@pytest.mark.slow
def test_the_report_has_every_section_and_its_pngs_open(tmp_path, cache_dir):
    extra = {"train.max_steps": "6", "train.eval_every_steps": "3", "train.log_every_steps": "2"}
    run_dir = train_tiny(tmp_path, cache_dir, **extra)
    images = EventAccumulator(str(run_dir), {"images": 0}).Reload().Tags()["images"]
    assert {"data/label_counts", "data/token_lengths"} <= set(images)  # the data part, in TensorBoard too

    result = run_cli("report", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    report = (run_dir / "report.md").read_text()
    assert [report.index(section) for section in SECTIONS] == sorted(report.index(s) for s in SECTIONS)
    pictures = re.findall(r"!\[[^\]]*\]\((report/[^)]+\.png)\)", report)
    assert len(pictures) == 5
    for picture in pictures:
        with Image.open(run_dir / picture) as image:
            image.verify()  # a whole PNG, not a stub
            assert image.size[0] > 500
    assert "| train | 200 |" in report and "| validation | 200 |" in report  # rows per split in the data table
    assert "Trained on" in report and "native bf16" in report  # the run recorded its hardware
    assert not (run_dir / "report.tmp").exists()


def test_a_folder_that_is_no_run_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no config.yaml; give a run folder"):
        write_report(tmp_path)
