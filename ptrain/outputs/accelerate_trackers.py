"""train.report_to's trackers other than TensorBoard: Accelerate's tracker classes (accelerate.tracking), started on
the main process with the config's name as experiment or project and the run folder's as run, any local store inside
the run folder, and given the scalars and hyperparameters ptrain's TensorBoard gets. A tracker that fails (a store
that cannot be written, a server out of reach, no credentials) is an OutputError naming it, in one line."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from ptrain.errors import OutputError, PtrainError, first_line
from ptrain.files.atomic import write_json

MLFLOW_STORE = "mlflow.db"  # ptrain's MLflow store without MLFLOW_TRACKING_URI: sqlite:///RUN/mlflow.db
MLFLOW_ARTIFACTS = "mlartifacts"  # that store's artifact folder (ptrain logs none; MLflow would default to ./mlruns)
RUN_IDS = "trackers.json"  # {"mlflow": {"store", "run_id"}}: the MLflow run a resume of this folder continues
# MLflow takes metric names of letters, digits and _ - . space : / only (mlflow.utils.validation)
NOT_IN_MLFLOW_NAMES = re.compile(r"[^/\w.\- :]")


def start_trackers(names: Sequence[str], run_dir: Path, experiment: str, hyperparameters: dict) -> list:
    """Each named tracker started, with the hyperparameters stored as its run's config or parameters: at the start,
    so a run still going (or stopped) shows them; TensorBoard's HPARAMS gets the same ones at the end."""
    trackers = []
    try:
        for name in names:
            with reporting(name):
                tracker = BUILDERS[name](run_dir, experiment)
                tracker.start()
                trackers.append(tracker)
                if hyperparameters:
                    tracker.store_init_configuration(hyperparameters)
            if name == "mlflow":
                remember_mlflow_run(run_dir, tracker)
    except PtrainError:
        finish_trackers(trackers, quietly=True)
        raise
    return trackers


def log_scalars(trackers: Sequence, values: dict[str, float], step: int) -> None:
    for tracker in trackers:
        with reporting(tracker.name):
            tracker.log(mlflow_names(values) if tracker.name == "mlflow" else values, step=step)


def finish_trackers(trackers: Sequence, quietly: bool = False) -> None:
    """End each tracker's run; `quietly` after an error that was reported already."""
    for tracker in trackers:
        if quietly:
            with suppress(Exception):
                tracker.finish()
        else:
            with reporting(tracker.name):
                tracker.finish()


@contextmanager
def reporting(name: str) -> Iterator[None]:
    """Any error of a tracker's library is one line naming the tracker; as a failed write of the run's own files
    (OutputError), it stops training resumably."""
    try:
        yield
    except PtrainError:
        raise
    except Exception as err:  # each library raises its own kinds (MlflowException, wandb.Error, OSError, ...)
        raise OutputError(f"train.report_to {name} failed: {first_line(err)}") from None


def mlflow_names(values: dict[str, float]) -> dict[str, float]:
    """The same tags where MLflow allows them; another character (in a label's name) becomes _, and an empty, `.`
    or `..` part of a path-like tag becomes _ too (MLflow refuses names that a path would normalise)."""
    named = {}
    for tag, value in values.items():
        parts = NOT_IN_MLFLOW_NAMES.sub("_", tag).split("/")
        named["/".join("_" if part in ("", ".", "..") else part for part in parts)] = value
    return named


def describe(trackers: Sequence, run_dir: Path) -> list[str]:
    """Where each tracker's run is, for the closing lines."""
    lines = []
    for tracker in trackers:
        if tracker.name == "mlflow":
            import mlflow

            store = mlflow.get_tracking_uri()
            lines.append(
                f"MLflow: run {tracker.active_run.info.run_id} in {store} (to browse: pip install mlflow; "
                f"mlflow ui --backend-store-uri {store})"
            )
    return lines


def _mlflow(run_dir: Path, experiment: str):
    """Runs go to $MLFLOW_TRACKING_URI, or to the run folder's own SQLite store (MLflow 3 keeps its file store in
    maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE is set). A resume continues the MLflow run the
    folder logged to, when that run is in the same store."""
    import mlflow
    from accelerate.tracking import MLflowTracker

    chosen = os.environ.get("MLFLOW_TRACKING_URI")  # read before set_tracking_uri, which exports it
    mlflow.set_tracking_uri(chosen or own_mlflow_store(run_dir))
    return MLflowTracker(
        experiment_name=experiment,  # $MLFLOW_EXPERIMENT_NAME wins (Accelerate)
        logging_dir=None if chosen else str(run_dir.resolve() / MLFLOW_ARTIFACTS),
        run_id=earlier_mlflow_run(run_dir),  # $MLFLOW_RUN_ID wins (Accelerate)
        run_name=run_dir.name,
    )


def own_mlflow_store(run_dir: Path) -> str:
    return f"sqlite:///{run_dir.resolve() / MLFLOW_STORE}"


def mlflow_store_key(run_dir: Path) -> str:
    """The store in use as trackers.json records it: the run folder's own by its file name (so that a moved folder
    still resumes into it), another by its URI."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    return MLFLOW_STORE if uri == own_mlflow_store(run_dir) else uri


def earlier_mlflow_run(run_dir: Path) -> str | None:
    try:
        earlier = json.loads((run_dir / RUN_IDS).read_text())["mlflow"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return earlier.get("run_id") if earlier.get("store") == mlflow_store_key(run_dir) else None


def remember_mlflow_run(run_dir: Path, tracker) -> None:
    run_id = tracker.active_run.info.run_id
    write_json(run_dir / RUN_IDS, {"mlflow": {"store": mlflow_store_key(run_dir), "run_id": run_id}})


def _wandb(run_dir: Path, experiment: str):
    from accelerate.tracking import WandBTracker

    return WandBTracker(experiment, name=run_dir.name, dir=str(run_dir))  # its files in RUN/wandb/, not ./wandb/


def _trackio(run_dir: Path, experiment: str):
    from accelerate.tracking import TrackioTracker

    return TrackioTracker(experiment, name=run_dir.name)


def _comet_ml(run_dir: Path, experiment: str):
    from accelerate.tracking import CometMLTracker

    return CometMLTracker(experiment)


def _aim(run_dir: Path, experiment: str):
    from accelerate.tracking import AimTracker

    return AimTracker(run_dir.name, str(run_dir), experiment=experiment)  # its repository: RUN/.aim


def _clearml(run_dir: Path, experiment: str):
    from accelerate.tracking import ClearMLTracker

    # one task per run folder ($CLEARML_TASK still wins): ClearML would otherwise reuse the config's last task
    return ClearMLTracker(experiment, task_name=os.environ.get("CLEARML_TASK", run_dir.name))


def _dvclive(run_dir: Path, experiment: str):
    from accelerate.tracking import DVCLiveTracker

    return DVCLiveTracker(dir=str(run_dir / "dvclive"))


def _swanlab(run_dir: Path, experiment: str):
    from accelerate.tracking import SwanLabTracker

    (run_dir / "swanlog").mkdir(exist_ok=True)  # SwanLab wants its log folder to exist
    return SwanLabTracker(experiment, experiment_name=run_dir.name, logdir=str(run_dir / "swanlog"))


BUILDERS: dict[str, Callable[[Path, str], object]] = {
    "mlflow": _mlflow,
    "wandb": _wandb,
    "trackio": _trackio,
    "comet_ml": _comet_ml,
    "aim": _aim,
    "clearml": _clearml,
    "dvclive": _dvclive,
    "swanlab": _swanlab,
}
