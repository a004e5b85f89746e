"""TensorBoard on the main process only (a no-op elsewhere): scalars, figures, text tables, HPARAMS and the
custom-scalars layout."""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

# CUSTOM SCALARS tab: training and evaluation loss on one chart (their own tabs keep them apart).
LAYOUT = {"ptrain": {"loss (train and eval)": ["Multiline", ["train/loss", "eval/loss"]]}}


class Tracker:
    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None = None):
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step) if enabled else None
        if self.writer:
            self.writer.add_custom_scalars(LAYOUT)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        if self.writer:
            self.writer.add_text(tag, markdown, step)

    def figure(self, tag: str, figure, step: int) -> None:
        if self.writer:
            self.writer.add_figure(tag, figure, step, close=True)
        else:
            import matplotlib.pyplot as plt

            plt.close(figure)

    def embedding(self, vectors, metadata: list[list[str]], header: list[str], tag: str, step: int = 0) -> None:
        """Vectors with per-row metadata columns for the PROJECTOR tab (PCA / t-SNE / UMAP maps)."""
        if self.writer:
            self.writer.add_embedding(vectors, metadata=metadata, metadata_header=header, tag=tag, global_step=step)

    def hparams(self, values: dict, metrics: dict[str, float], step: int) -> None:
        """Fill the HPARAMS tab in this run's own event file (add_hparams would start a sub-run).

        The tab reads each metric from the scalar of the same tag, so they are written here too.
        """
        if not self.writer:
            return
        experiment, session_start, session_end = hparams(values, metrics)
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        self.scalars(metrics, step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
