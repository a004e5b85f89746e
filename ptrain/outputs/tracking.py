"""What a run reports, on the main process only (a no-op elsewhere): TensorBoard (scalars, figures, text tables,
HPARAMS and the custom-scalars layout), RUN/metrics.jsonl, and train.report_to's other trackers (scalars and
hyperparameters, through Accelerate's: outputs/accelerate_trackers.py). A write that fails (a full disk) is an
OutputError naming the file."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from ptrain.errors import OutputError
from ptrain.files.atomic import write_failed, write_text
from ptrain.outputs.accelerate_trackers import describe, finish_trackers, log_scalars, start_trackers

STREAM = "metrics.jsonl"

# CUSTOM SCALARS tab: training and evaluation loss on one chart (their own tabs keep them apart).
LAYOUT = {"ptrain": {"loss (train and eval)": ["Multiline", ["train/loss", "eval/loss"]]}}


class Tracker:
    """Scalars also go to RUN/metrics.jsonl, one line per call ({"step", "time", tag: value, ...}), flushed as
    written, for scripts that follow a run, whatever `report_to` names; a resume drops the lines logged after its
    checkpoint, as TensorBoard does its events. `report_to` (train.report_to): "tensorboard" is ptrain's own writer,
    the others Accelerate's trackers, whose run is named after the run folder, in `experiment` (the config's name);
    they get `hyperparameters` now, TensorBoard gets them with the final metrics (hparams)."""

    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        purge_step: int | None = None,
        report_to: Sequence[str] = ("tensorboard",),
        experiment: str = "ptrain",
        hyperparameters: dict | None = None,
    ):
        self.writer = self.stream = None
        self.others: list = []  # Accelerate's trackers
        self.run_dir = run_dir
        self.events = run_dir / "events.out.tfevents.*"  # this writer's own file once it exists
        self.lines = run_dir / STREAM
        if not enabled:
            return
        if "tensorboard" in report_to:
            hush_event_writer_thread()
            earlier = set(run_dir.glob(self.events.name))
            with self.writing(run_dir):
                self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)
                self.events = next(iter(set(run_dir.glob(self.events.name)) - earlier), self.events)
                self.writer.add_custom_scalars(LAYOUT)
        with self.writing(self.lines):
            self.stream = open_stream(self.lines, purge_step)
        others = [name for name in report_to if name != "tensorboard"]
        try:
            self.others = start_trackers(others, run_dir, experiment, hyperparameters or {})
        except OutputError:
            self.abandon()
            raise

    @contextmanager
    def writing(self, path: Path) -> Iterator[None]:
        """An OSError in the block (TensorBoard's writer raises its thread's at its next call) is an OutputError
        naming `path`."""
        try:
            yield
        except OSError as err:
            raise write_failed(Path(err.filename) if err.filename else path, err) from None

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.stream is None:
            return
        if self.writer:
            with self.writing(self.events):
                for tag, value in values.items():
                    self.writer.add_scalar(tag, value, step)
        values = {k: float(v) for k, v in values.items()}
        line = {"step": step, "time": round(time.time(), 3), **values}
        with self.writing(self.lines):
            self.stream.write(json.dumps(line) + "\n")
            self.stream.flush()
        log_scalars(self.others, values, step)

    def record(self, tag: str, value, step: int) -> None:
        """A structured value (a list of sample answers) as one metrics.jsonl line {"step", "time", tag: value}."""
        if self.stream is None:
            return
        with self.writing(self.lines):
            self.stream.write(json.dumps({"step": step, "time": round(time.time(), 3), tag: value}) + "\n")
            self.stream.flush()

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        if self.writer:
            with self.writing(self.events):
                self.writer.add_text(tag, markdown, step)

    def figure(self, tag: str, figure, step: int) -> None:
        if self.writer:
            with self.writing(self.events):
                self.writer.add_figure(tag, figure, step, close=True)
        else:
            import matplotlib.pyplot as plt

            plt.close(figure)

    def embedding(self, vectors, metadata: list[list[str]], header: list[str], tag: str, step: int = 0) -> None:
        """Vectors with per-row metadata columns for the PROJECTOR tab (PCA / t-SNE / UMAP maps)."""
        if self.writer:
            with self.writing(self.events):
                self.writer.add_embedding(vectors, metadata=metadata, metadata_header=header, tag=tag, global_step=step)

    def hparams(self, values: dict, metrics: dict[str, float], step: int) -> None:
        """Fill the HPARAMS tab in this run's own event file (add_hparams would start a sub-run).

        The tab reads each metric from the scalar of the same tag, so they are written here too (and go to the other
        trackers, which got `values` when they started).
        """
        if self.writer:
            experiment, session_start, session_end = hparams(values, metrics)
            file_writer = self.writer._get_file_writer()
            with self.writing(self.events):
                for summary in (experiment, session_start, session_end):
                    file_writer.add_summary(summary)
        self.scalars(metrics, step)

    def destinations(self) -> list[str]:
        """Where this run's trackers show it, one line each (TensorBoard: every run of the config side by side)."""
        tensorboard = [f"TensorBoard: tensorboard --logdir {self.run_dir.parent}"] if self.writer else []
        return tensorboard + describe(self.others, self.run_dir)

    def close(self) -> None:
        """Flush and close: a write error TensorBoard's thread met since the last call is raised here."""
        if self.writer:
            with self.writing(self.events):
                self.writer.flush()
                self.writer.close()
        if self.stream:
            with self.writing(self.lines):
                self.stream.close()
        finish_trackers(self.others)

    def abandon(self) -> None:
        """Close after a failed write, quietly: the error was reported once already."""
        for handle in (self.writer, self.stream):
            if handle is not None:
                with suppress(OSError):
                    handle.close()
        finish_trackers(self.others, quietly=True)


def hush_event_writer_thread() -> None:
    """TensorBoard writes events in a thread; a write error (a full disk) kills it and threading prints its
    traceback, and the writer raises the same error again, in the training thread, at its next call (add_*, flush,
    close), where Tracker reports it in one line. So the thread's own report is dropped: only that one."""
    previous = threading.excepthook
    if getattr(previous, "ptrain_hushed", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        from_writer = type(args.thread).__module__ == "tensorboard.summary.writer.event_file_writer"
        if not (from_writer and isinstance(args.exc_value, OSError)):
            previous(args)

    hook.ptrain_hushed = True
    threading.excepthook = hook


def open_stream(path: Path, purge_step: int | None):
    """metrics.jsonl for appending; with purge_step, the lines of later steps are dropped first."""
    if purge_step is not None and path.is_file():
        kept = [line for line in path.read_text().splitlines(keepends=True) if _step(line) < purge_step]
        write_text(path, "".join(kept))
    return path.open("a")


def _step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a torn last line (a killed run) is dropped
