"""Two CPU processes (gloo) through the real `accelerate launch`: the same schedule and metrics as one process,
one writer, one tokenization; launches that would not give the processes asked for are refused in one line."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType

from ptrain.runtime import distributed
from ptrain.tasks import get_task, load_config
from tests.conftest import CONFIGS, accelerate_launch, run_cli, tiny_overrides
from tests.test_cli_end_to_end import events

TWO_CPU_PROCESSES = ["--multi_gpu", "--num_processes", "2"]  # the documented CPU command (see the README)
ACCELERATE_CONFIGS = sorted((CONFIGS / "accelerate").glob("*.yaml"))


def overrides(tmp, cache, per_device_batch_size: int) -> list[str]:
    """400 rows, 2 epochs; 201 validation rows: not a multiple of 2 processes x eval batch 32, so Accelerate
    pads the last round with repeated samples that gather_for_metrics must drop."""
    extra = {
        "data.max_eval_rows": "201",
        "train.eval_batch_size": "32",
        "train.epochs": "2",
        "train.per_device_batch_size": str(per_device_batch_size),
        "train.log_every_steps": "1",
    }
    return tiny_overrides(tmp, cache, rows=400, **extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    """The same global batch of 32: 2 processes x 16 (with gradient checkpointing, which must work under DDP),
    and 1 process x 32."""
    two_dir, one_dir = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("one")
    two_args = [*overrides(two_dir, cache_dir, 16), "train.gradient_checkpointing=true"]
    two = accelerate_launch(TWO_CPU_PROCESSES, "ptrain", "train", str(CONFIGS / "tiny.yaml"), *two_args)
    assert two.returncode == 0, two.stderr[-4000:]
    one = run_cli("train", str(CONFIGS / "tiny.yaml"), *overrides(one_dir, cache_dir, 32))
    assert one.returncode == 0, one.stderr[-4000:]
    (two_run,) = (two_dir / "runs" / "tiny").iterdir()
    (one_run,) = (one_dir / "runs" / "tiny").iterdir()
    return SimpleNamespace(two=two, two_run=two_run, two_args=two_args, one=one, one_run=one_run)


def plan_line(stdout: str) -> str:
    return re.search(r"ptrain: \d+ optimizer steps per epoch.*", stdout).group(0)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_join_one_group_with_the_same_global_batch(runs):
    assert "ptrain: 2 process(es) on cpu" in runs.two.stdout
    assert "per-device batch 16 x accumulation 1 x 2 = global batch 32" in runs.two.stdout
    assert "per-device batch 32 x accumulation 1 x 1 = global batch 32" in runs.one.stdout
    assert (
        plan_line(runs.two.stdout)
        == plan_line(runs.one.stdout)
        == ("ptrain: 13 optimizer steps per epoch, 26 in total (2 epoch(s)), warmup 3")
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_learning_rate_curve_equals_the_one_process_curve(runs):
    two = [(e.step, e.value) for e in events(runs.two_run).Scalars("train/learning_rate")]
    one = [(e.step, e.value) for e in events(runs.one_run).Scalars("train/learning_rate")]
    assert len(two) == 26 and two == one
    assert max(value for _, value in two) == pytest.approx(1e-3) and two[-1][1] == 0.0  # warmup, peak, decay to 0
    for run in (runs.two_run, runs.one_run):
        assert json.loads((run / "metrics.json").read_text())["train"]["optimizer_steps"] == 26


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_metrics_equal_one_process_eval_of_the_export(runs):
    result = run_cli("eval", str(CONFIGS / "tiny.yaml"), *runs.two_args, "--model", str(runs.two_run / "final"))
    assert result.returncode == 0, result.stderr[-3000:]
    one_process = json.loads(result.stdout)
    two_processes = json.loads((runs.two_run / "metrics.json").read_text())["final"]
    for name in get_task("sequence_classification").metrics:
        assert two_processes[name] == pytest.approx(one_process[name], abs=1e-6), name


@pytest.mark.slow
@pytest.mark.multiprocess
def test_only_the_main_process_writes(runs):
    assert len(list(runs.two_run.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in runs.two_run.iterdir() if p.is_dir()) == ["best", "checkpoints", "final"]
    assert runs.two.stdout.count("ptrain: run folder") == 1
    for checkpoint in (runs.two_run / "checkpoints").iterdir():  # one folder, with each process's RNG state
        assert {"meta.json", "random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in checkpoint.iterdir()}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_cold_cache_is_tokenized_once(tmp_path):
    """The main process tokenizes; the other one waits, then reads the main's cache."""
    cpu_config = ["--config_file", str(CONFIGS / "accelerate" / "cpu_2proc.yaml")]
    args = tiny_overrides(tmp_path, tmp_path / "cold_cache", rows=200)
    result = accelerate_launch(cpu_config, "tests.tokenize_probe", str(CONFIGS / "tiny.yaml"), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("process "))
    assert lines == [
        "process 0/2 cache hits {'train': False, 'validation': False}",
        "process 1/2 cache hits {'train': True, 'validation': True}",
    ]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_single_process_cpu_launcher_is_refused(tmp_path, cache_dir):
    """`accelerate launch --cpu --num_processes 2` starts one process: refused before any work, in one line."""
    args = tiny_overrides(tmp_path, cache_dir)
    result = accelerate_launch(["--cpu", "--num_processes", "2"], "ptrain", "train", str(CONFIGS / "tiny.yaml"), *args)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ptrain: error: ")]
    assert len(errors) == 1 and "accelerate launch --multi_gpu --num_processes N" in errors[0], result.stderr[-3000:]
    assert not (tmp_path / "runs").exists()


def test_processes_outside_one_group_are_refused(monkeypatch):
    """torchrun said 2 processes, but the Accelerator formed no group (as a plain Accelerator() does on CPU)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(distributed, "Accelerator", lambda **_: SimpleNamespace(num_processes=1))
    with pytest.raises(distributed.LaunchError) as info:
        distributed.build_accelerator(load_config(CONFIGS / "tiny.yaml", ["train.mixed_precision=no"]))
    message = str(info.value)
    assert "started 2 processes but this one is in a group of 1" in message and "\n" not in message
    assert "accelerate launch --multi_gpu --num_processes 2 -m ptrain train CONFIG" in message


@pytest.mark.parametrize(
    "environ, launched",
    [({}, 1), ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}, 4), ({"OMPI_COMM_WORLD_SIZE": "3"}, 3)],
)
def test_launched_world_size_reads_torchrun_and_mpi(environ, launched):
    assert distributed.launched_world_size(environ) == launched
    distributed.check_one_group(launched, launched)  # a formed group passes


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_files_load_in_accelerate(path):
    """Accelerate's own loader rejects unknown top-level keys; nested keys must be `accelerate launch` options,
    or the launcher ignores them silently."""
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig) and config.num_processes >= 1
    options = {action.dest for action in launch_command_parser()._actions}
    nested = [*config.fsdp_config, *config.deepspeed_config]
    assert [key for key in nested if key not in options] == []
    if config.distributed_type is not DistributedType.NO:
        assert config.num_processes > 1 and config.gpu_ids == "all"


def test_every_distributed_setup_has_a_config_file():
    names = {path.stem for path in ACCELERATE_CONFIGS}
    assert {"single_gpu", "multi_gpu_bf16", "fsdp", "deepspeed_zero2", "two_nodes", "cpu_2proc"} <= names
    types = {path.stem: load_config_from_file(str(path)).distributed_type for path in ACCELERATE_CONFIGS}
    assert types["fsdp"] is DistributedType.FSDP and types["deepspeed_zero2"] is DistributedType.DEEPSPEED
    assert load_config_from_file(str(CONFIGS / "accelerate" / "two_nodes.yaml")).num_machines == 2
