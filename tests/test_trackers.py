"""train.report_to: TensorBoard and MLflow (through Accelerate's tracker) get the same scalars at the same steps as
RUN/metrics.jsonl and the same hyperparameters, read back with MLflow's own client; a resumed run continues its MLflow
run; unknown trackers and missing packages are refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from ptrain.config import read_config
from ptrain.errors import ConfigError
from ptrain.outputs.accelerate_trackers import mlflow_names
from tests.conftest import CONFIGS, run_cli, tiny_overrides

MLFLOW_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS")
# 64 rows, batch 16: 4 optimizer steps, each logged, evaluated at steps 2 and 4
SETTINGS = {
    "train.report_to": "[tensorboard,mlflow]",
    "train.epochs": "1",
    "train.per_device_batch_size": "16",
    "train.log_every_steps": "1",
    "train.eval_every_steps": "2",
    "data.max_eval_rows": "48",
}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, cache_dir):
    """A run reporting to TensorBoard and MLflow, with no MLflow variable of the caller's environment."""
    tmp = tmp_path_factory.mktemp("trackers")
    with pytest.MonkeyPatch.context() as patch:
        for name in MLFLOW_VARIABLES:
            patch.delenv(name, raising=False)
        result = run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp, cache_dir, rows=64, **SETTINGS))
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp / "runs" / "tiny").iterdir()
    return run_dir, result


def logged_lines(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """RUN/metrics.jsonl as {tag: [(step, value), ...]}."""
    history: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for tag, value in record.items():
            if tag not in ("step", "time"):
                history.setdefault(tag, []).append((record["step"], value))
    return history


def mlflow_run(store: str, run_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    run_id = json.loads((run_dir / "trackers.json").read_text())["mlflow"]["run_id"]
    return client, client.get_run(run_id)


@pytest.mark.slow
def test_mlflow_gets_the_scalars_tensorboard_and_metrics_jsonl_get(tracked):
    run_dir, result = tracked
    store = f"sqlite:///{run_dir / 'mlflow.db'}"  # the default: inside the run folder
    client, run = mlflow_run(store, run_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "tiny" and experiment.artifact_location.startswith(str(run_dir))
    expected = logged_lines(run_dir)
    assert {"train/loss", "eval/weighted_f1", "hparams/best_weighted_f1"} <= set(expected)
    assert sorted(step for step, _ in expected["train/loss"]) == [1, 2, 3, 4]
    assert set(run.data.metrics) == set(expected)
    for tag, points in expected.items():
        history = client.get_metric_history(run.info.run_id, tag)
        assert sorted((metric.step, metric.value) for metric in history) == sorted(points), tag
    events = EventAccumulator(str(run_dir), {"scalars": 0}).Reload()
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, points in expected.items():
        board = sorted((event.step, event.value) for event in events.Scalars(tag))
        assert [step for step, _ in board] == sorted(step for step, _ in points), tag
        assert [value for _, value in board] == pytest.approx([value for _, value in sorted(points)], rel=1e-6), tag
    assert f"ptrain: MLflow: run {run.info.run_id} in {store}" in result.stdout
    assert "Traceback" not in result.stderr and "INFO mlflow" not in result.stderr


@pytest.mark.slow
def test_mlflow_gets_the_hyperparameters_of_the_hparams_tab(tracked):
    run_dir, _ = tracked
    _, run = mlflow_run(f"sqlite:///{run_dir / 'mlflow.db'}", run_dir)
    content = EventAccumulator(str(run_dir)).Reload().PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hparams = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    assert set(run.data.params) == set(hparams) >= {"model", "learning_rate", "batch", "seed"}
    for name, value in hparams.items():  # MLflow keeps each parameter as text
        logged = run.data.params[name]
        assert float(logged) == value if isinstance(value, float) else logged == str(value), name


@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_run_in_the_store_the_environment_names(cache_dir, tmp_path, monkeypatch):
    """Killed after step 3 (checkpoint at step 2), then resumed: one MLflow run, finished, in the store the
    environment names. MLflow cannot delete points: step 3 is there twice, the resumed value last."""
    for name in MLFLOW_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    settings = {
        **SETTINGS,
        "train.eval_every_steps": "6",
        "train.checkpoint_every_steps": "2",
        "train.callbacks": "[tests/kill_at_step.py:KillAtStep]",
    }
    args = ["train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp_path, cache_dir, rows=96, **settings)]
    killed = run_cli(*args, env={"PTRAIN_TEST_KILL_AT_STEP": "4"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli(*args, "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    assert not (run_dir / "mlflow.db").exists()
    client, run = mlflow_run(store, run_dir)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: (m.step, m.timestamp))
    assert [metric.step for metric in history] == [1, 2, 3, 3, 4, 5, 6]
    latest = {metric.step: metric.value for metric in history}
    assert sorted(latest.items()) == sorted(logged_lines(run_dir)["train/loss"])  # metrics.jsonl: the resumed 3 only


@pytest.mark.slow
def test_an_unknown_tracker_is_refused_in_one_line_naming_the_key_and_the_trackers(tmp_path):
    result = run_cli(
        "check", str(CONFIGS / "tiny.yaml"), f"output_dir={tmp_path}", "train.report_to=[tensorboard,mlfow]"
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ptrain: error: override train.report_to: train.report_to tracker 'mlfow' is not one")
    assert "(did you mean 'mlflow'?)" in line and "allowed: tensorboard, mlflow, wandb," in line


def test_a_tracker_whose_package_is_missing_is_refused_naming_what_to_install(monkeypatch):
    from ptrain.config import checks

    monkeypatch.setitem(checks.TRACKER_PACKAGES, "wandb", (("ptrain_test_no_such_module",), "wandb"))
    with pytest.raises(ConfigError, match=r"train.report_to names wandb, which needs ptrain_test_no_such_module \("):
        read_config(CONFIGS / "tiny.yaml", ["train.report_to=[tensorboard,wandb]"])
    assert read_config(CONFIGS / "tiny.yaml", ["train.report_to=[]"]).train.report_to == []


def test_no_tracker_still_writes_metrics_jsonl(tmp_path):
    from ptrain.outputs.tracking import Tracker

    tracker = Tracker(tmp_path, enabled=True, report_to=[])
    tracker.scalars({"train/loss": 1.5}, step=1)
    tracker.hparams({"learning_rate": 1e-3}, {"hparams/best_loss": 1.5}, step=1)
    tracker.close()
    assert logged_lines(tmp_path) == {"train/loss": [(1, 1.5)], "hparams/best_loss": [(1, 1.5)]}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.jsonl"]  # no TensorBoard events
    assert tracker.destinations() == []


def test_tags_mlflow_refuses_are_the_only_ones_renamed():
    values = {"eval/f1_B-PER": 1.0, "eval_f1_per_label/sci-fi (old)": 2.0, "eval_f1_per_label/..": 3.0}
    assert mlflow_names(values) == {
        "eval/f1_B-PER": 1.0,
        "eval_f1_per_label/sci-fi _old_": 2.0,
        "eval_f1_per_label/_": 3.0,
    }
