"""`ptrain sweep` and `ptrain runs`: a real 2 learning rates x 2 seeds sweep of the tiny config (4 runs, a table,
a second run that does nothing, HPARAMS read back by TensorBoard), then the sweep's bookkeeping with a fake
launcher: failed points, retries, resumable points, refusals."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from ptrain.cli import main
from tests.conftest import CONFIGS, run_cli, tiny_overrides

POINTS = {
    "learning_rate-1e-3_seed-0",
    "learning_rate-1e-3_seed-1",
    "learning_rate-3e-3_seed-0",
    "learning_rate-3e-3_seed-1",
}


def sweep_args(tmp: Path, cache: Path) -> list[str]:
    tiny = tiny_overrides(
        tmp,
        cache,
        rows=64,
        **{
            "data.max_eval_rows": "32",
            "train.max_steps": "3",
            "train.per_device_batch_size": "16",
            "train.eval_every_steps": "2",
            "train.highest_loss_examples": "2",
        },
    )
    return ["sweep", str(CONFIGS / "tiny.yaml"), "train.learning_rate=1e-3,3e-3", *tiny, "--seeds", "0,1"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("sweep")
    result = run_cli(*sweep_args(tmp, cache_dir))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    (sweep_dir,) = (tmp / "runs" / "tiny").iterdir()
    return sweep_dir, result, tmp


@pytest.mark.slow
def test_every_point_runs_in_its_own_folder(swept):
    sweep_dir, result, _ = swept
    assert {p.name for p in sweep_dir.iterdir() if p.is_dir()} == POINTS
    for point in POINTS:
        config = yaml.safe_load((sweep_dir / point / "config.yaml").read_text())
        assert config["run_dir"] == str(sweep_dir / point)
        assert config["train"]["learning_rate"] == float(point.split("_")[1].split("-", 1)[1])
        assert json.loads((sweep_dir / point / "metrics.json").read_text())["train"]["optimizer_steps"] == 3
    assert "4 of 4 points finished" in result.stdout
    assert len(json.loads((sweep_dir / "sweep.json").read_text())["points"]) == 4


@pytest.mark.slow
def test_running_the_sweep_again_does_nothing(swept, cache_dir):
    sweep_dir, _, tmp = swept
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("*")}
    again = run_cli(*sweep_args(tmp, cache_dir))
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("finished before, skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("*")} == before


@pytest.mark.slow
def test_runs_table_lists_the_sweep_with_seed_means(swept, capsys):
    sweep_dir, _, tmp = swept
    assert main(["runs", str(sweep_dir), "--format", "json", "--sort", "final_loss"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["varied"] == ["train.learning_rate", "train.seed"]
    assert {row["run"] for row in report["runs"]} == POINTS
    losses = [row["final_loss"] for row in report["runs"]]
    assert losses == sorted(losses) and all(loss > 0 for loss in losses)
    assert all(row["status"] == "finished" and row["steps"] == 3 and row["wall_seconds"] > 0 for row in report["runs"])
    (low, high) = sorted(report["seed_groups"], key=lambda g: g["train.learning_rate"])
    assert low["seeds"] == [0, 1] and low["status"] == "2/2 finished"
    first = [r["best_loss"] for r in report["runs"] if r["train.learning_rate"] == 1e-3]
    assert low["best_loss"] == pytest.approx(sum(first) / 2) and low["best_loss_std"] >= 0
    assert main(["runs", str(tmp / "runs")]) == 0
    table = capsys.readouterr().out
    assert "mean ± std over seeds" in table and table.count("finished") >= 4
    assert main(["runs", str(sweep_dir), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["kind"] for r in rows] == ["run"] * 4 + ["seed_mean"] * 2


@pytest.mark.slow
def test_hparams_of_the_sweep_are_read_by_tensorboard(swept):
    sweep_dir, _, _ = swept
    events = EventMultiplexer(size_guidance={"tensors": 0}).AddRunsFromDirectory(str(sweep_dir)).Reload()
    content = events.PluginRunToTagToContent("hparams")
    assert set(content) == POINTS
    for point, tags in content.items():
        start = plugin_data_pb2.HParamsPluginData.FromString(tags["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["train.learning_rate"].number_value == pytest.approx(float(point[14:18]))
        assert start.hparams["train.seed"].number_value == int(point[-1])
        experiment = plugin_data_pb2.HParamsPluginData.FromString(tags["_hparams_/experiment"]).experiment
        assert {"train.learning_rate", "train.seed"} <= {h.name for h in experiment.hparam_infos}
        assert "hparams/best_weighted_f1" in {m.name.tag for m in experiment.metric_infos}
        (final_loss,) = events.Tensors(point, "hparams/final_loss")
        assert final_loss.tensor_proto.float_val[0] > 0
        (layout,) = events.Tensors(point, "custom_scalars__config__")
        chart = layout_pb2.Layout.FromString(layout.tensor_proto.string_val[0]).category[0].chart[0]
        assert list(chart.multiline.tag) == ["train/loss", "eval/loss"]


FAKE_LAUNCHER = """
import json, pathlib, sys
run_dir = pathlib.Path(next(a for a in sys.argv if a.startswith("run_dir="))[8:])
(run_dir / "argv.json").write_text(json.dumps(sys.argv))
if "train.learning_rate=0.5" in sys.argv:
    sys.exit(3)
(run_dir / "config.yaml").write_text("name: fake\\n")
(run_dir / "metrics.json").write_text("{}")
"""


def test_failed_points_do_not_stop_the_sweep_and_are_retried(tmp_path, capsys):
    launcher = tmp_path / "fake_launcher.py"
    launcher.write_text(FAKE_LAUNCHER)
    args = [
        "sweep",
        str(CONFIGS / "tiny.yaml"),
        "train.learning_rate=0.5,0.1,0.2",
        f"output_dir={tmp_path}",
        "--id",
        "s1",
        "--launcher",
        f"{sys.executable} {launcher}",
    ]
    sweep_dir = tmp_path / "tiny" / "s1"
    resumable = sweep_dir / "learning_rate-0.2" / "checkpoints" / "step-00000004"
    resumable.mkdir(parents=True)
    (resumable / "meta.json").write_text(json.dumps({"loop": {"global_step": 4}}))
    (resumable / "complete").touch()
    assert main(args) == 1
    out = capsys.readouterr()
    assert "failed (exit 3)" in out.out and "2 of 3 points finished" in out.out and "learning_rate-0.5" in out.err
    argv = json.loads((sweep_dir / "learning_rate-0.2" / "argv.json").read_text())
    assert argv[:4] == [str(launcher), "-m", "ptrain", "train"] and argv[-1] == "train.resume=auto"
    assert 'hparams=["train.learning_rate"]' in argv
    assert main(args) == 1  # the failed point is tried again, the finished ones are not
    assert capsys.readouterr().out.count("finished before, skipped") == 2


SLOW_LAUNCHER = """
import pathlib, signal, sys, time
run_dir = pathlib.Path(next(a for a in sys.argv if a.startswith("run_dir="))[8:])
signal.signal(signal.SIGTERM, lambda *_: ((run_dir / "got_sigterm").touch(), sys.exit(143)))
(run_dir / "started").touch()
time.sleep(60)
"""


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigterm_reaches_the_running_point_and_no_further_point_starts(tmp_path):
    import subprocess
    import time

    from tests.conftest import REPO

    launcher = tmp_path / "slow_launcher.py"
    launcher.write_text(SLOW_LAUNCHER)
    command = [
        sys.executable,
        "-m",
        "ptrain",
        "sweep",
        str(CONFIGS / "tiny.yaml"),
        "train.seed=1,2",
        f"output_dir={tmp_path}",
        "--id",
        "s",
        "--launcher",
        f"{sys.executable} {launcher}",
    ]
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = tmp_path / "tiny" / "s" / "seed-1"
    deadline = time.monotonic() + 60
    while not (first / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    sweep.terminate()
    out, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 143, err
    assert (first / "got_sigterm").exists() and not (tmp_path / "tiny" / "s" / "seed-2").exists()
    assert "sweep stopped; run the same command again" in err and "stopped by a signal (exit 143)" in out


def test_sweep_and_runs_refusals_are_one_line(tmp_path, capsys):
    tiny = str(CONFIGS / "tiny.yaml")
    refusals = {
        ("sweep", tiny, "train.epochs=2"): "nothing to sweep",
        ("sweep", tiny, "run_dir=x,y"): "sets run_dir itself",
        ("sweep", tiny, "train.seed=1,2", "--seeds", "0,1"): "not both",
        ("sweep", tiny, "train.learning_rate=1e-3,-1"): "greater than 0",
        ("sweep", tiny, "train.learning_rate=1e-3,"): "empty value",
        ("runs", str(tmp_path)): "no runs under",
    }
    for args, expected in refusals.items():
        assert main(list(args)) == 2, args
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, (args, err)
    (tmp_path / "tiny" / "s2").mkdir(parents=True)
    (tmp_path / "tiny" / "s2" / "sweep.json").write_text(json.dumps({"config": "other.yaml"}))
    assert main(["sweep", tiny, "train.seed=1,2", f"output_dir={tmp_path}", "--id", "s2"]) == 2
    assert "holds a different sweep" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_sort_names_the_columns(swept, capsys):
    sweep_dir, _, _ = swept
    assert main(["runs", str(sweep_dir), "--sort", "speed"]) == 2
    assert "choose one of steps, wall_seconds, best_weighted_f1, best_loss" in capsys.readouterr().err
    assert main(["runs", str(sweep_dir), "--sort", "accuracy", "--format", "json"]) == 0
    scores = [r["best_accuracy"] for r in json.loads(capsys.readouterr().out)["runs"]]
    assert scores == sorted(scores, reverse=True)


def test_a_fixed_run_dir_is_used_refused_when_taken_and_resumed_from(tmp_path):
    from types import SimpleNamespace

    from ptrain.errors import ConfigError
    from ptrain.outputs.run_dir import claim_run_dir
    from ptrain.training.checkpointing.checkpoint import REQUIRED_FILES, resolve_resume

    main_process = SimpleNamespace(is_main_process=True, num_processes=1)
    point = tmp_path / "sweep" / "lr-0.1"
    run_dir, lock = claim_run_dir(main_process, str(tmp_path), "tiny", str(point))
    lock.release()
    assert run_dir == point and point.is_dir()
    (point / "config.yaml").write_text("name: tiny\n")
    with pytest.raises(ConfigError, match="already holds a run; continue it with train.resume=auto"):
        claim_run_dir(main_process, str(tmp_path), "tiny", str(point))
    assert resolve_resume("auto", str(tmp_path), "tiny", str(point)) is None
    checkpoint = point / "checkpoints" / "step-00000007"
    checkpoint.mkdir(parents=True)
    for name in REQUIRED_FILES:
        (checkpoint / name).write_text(json.dumps({"loop": {"global_step": 7}, "created": 0}))
    (checkpoint / "complete").touch()
    assert resolve_resume("auto", str(tmp_path / "elsewhere"), "tiny", str(point)).step == 7
