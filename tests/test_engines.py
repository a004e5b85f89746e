"""FSDP2 and DeepSpeed ZeRO-2 and ZeRO-3, each on two CPU processes over gloo through the real `accelerate launch` and
the shipped accelerate configs: the mathematics of DDP (the same logged losses, gradient norms and learning rates),
a SIGKILLed run resumed to the uninterrupted run's weights, sharded checkpoints checked like any other, EMA, a
user loss, metric and callbacks, a named evaluation set, gradient checkpointing, LoRA under FSDP, and exports that
pipeline() loads. Accelerate selects these engines only for GPU launches: tests/gpu_launch.py arranges its state as
a GPU launch would (a fixture; ptrain itself refuses them on a CPU, tested last)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import FullyShardedDataParallelPlugin
from safetensors.torch import load_file

from ptrain.errors import CheckpointError, ConfigError, LaunchError
from ptrain.runtime import deepspeed_settings
from ptrain.runtime.deepspeed_settings import check_batch, deepspeed_plugin
from ptrain.runtime.engine import Engine, check_fsdp_plugin, check_supported
from ptrain.tasks import load_config
from ptrain.training.checkpointing.checkpoint import Checkpoint
from ptrain.training.checkpointing.resume import check_same_engine
from tests.conftest import CONFIGS, accelerate_launch, run_cli, scalar_values, tiny_overrides

DEEPSPEED = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed comes with the deepspeed extra (make test has it)"
)
ENGINES = {
    "fsdp2": "fsdp.yaml",
    "zero2": "deepspeed_zero2.yaml",
    "zero3": "deepspeed_zero3.yaml",
}
STARTS = {
    "ddp": "engine ddp (2 processes)",
    "fsdp2": "engine fsdp2 (full shard, 2 processes)",
    "zero2": "engine deepspeed zero-2 (2 processes)",
    "zero3": "engine deepspeed zero-3 (2 processes)",
}
# 256 rows over 2 processes x 16 rows x accumulation 2: 4 optimizer steps per epoch, 8 in all.
SETTINGS = {
    "data.max_eval_rows": "64",
    "data.eval_files": "{heldout: emotion/test.txt}",
    "train.epochs": "2",
    "train.per_device_batch_size": "16",
    "train.gradient_accumulation_steps": "2",
    "train.log_every_steps": "1",
    "train.eval_every_steps": "4",
    "train.checkpoint_every_steps": "2",
    "train.gradient_checkpointing": "true",
    "train.early_stopping_patience": "5",
    # torch's own dropout under DDP too (ptrain's CPU fast paths draw their own masks, and never run sharded)
    "train.fast_paths": "false",
    "train.callbacks": "[configs/user_code/eval_log.py:EvalLog, tests/kill_at_step.py:KillAtStep]",
}
KILLED_AFTER_STEP = 5  # the newest checkpoint then is step 4's: steps 5 and a half of an epoch are redone


# EMA everywhere but under ZeRO-3, which refuses it (test_what_an_engine_cannot_run_is_refused_before_any_work)
EMA = {"train.ema_decay": "0.9"}


def launch(engine: str, out: Path, cache: Path, *extra: str, env: dict | None = None):
    """The launch's output is also kept in OUT/launch-N.log (both streams), read when an assertion names it."""
    config_file = CONFIGS / "accelerate" / ("cpu_2proc.yaml" if engine == "ddp" else ENGINES[engine])
    args = tiny_overrides(out, cache, rows=256, **SETTINGS, **({} if engine == "zero3" else EMA))
    result = accelerate_launch(
        ["--config_file", str(config_file), "--num_processes", "2"],
        "tests.gpu_launch",
        "train",
        str(CONFIGS / "tiny_user_code.yaml"),
        *args,
        *extra,
        env=env,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"launch-{len(list(out.glob('launch-*.log')))}.log").write_text(result.stdout + result.stderr)
    return result


def failed(result) -> str:
    """What a failed launch printed last: both streams (a process's error may be on either)."""
    return f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"


def run_folder(out: Path) -> Path:
    (run_dir,) = (out / "runs" / "tiny_user_code").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, cache_dir) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("ddp")
    result = launch("ddp", out, cache_dir)
    assert result.returncode == 0, failed(result)
    return SimpleNamespace(result=result, run_dir=run_folder(out))


@pytest.fixture(
    scope="module", params=[pytest.param(name, marks=DEEPSPEED if "zero" in name else ()) for name in ENGINES]
)
def engine(request, tmp_path_factory, cache_dir) -> SimpleNamespace:
    """The uninterrupted run under the engine, and one SIGKILLed after step 5 then resumed."""
    name = request.param
    out, killed = tmp_path_factory.mktemp(name), tmp_path_factory.mktemp(f"{name}_killed")
    result = launch(name, out, cache_dir)
    assert result.returncode == 0, failed(result)
    crash = launch(name, killed, cache_dir, env={"PTRAIN_TEST_KILL_AT_STEP": str(KILLED_AFTER_STEP)})
    assert crash.returncode != 0
    resumed = launch(name, killed, cache_dir, "train.resume=auto")
    assert resumed.returncode == 0, failed(resumed)
    return SimpleNamespace(
        name=name, result=result, run_dir=run_folder(out), crash=crash, resumed=resumed, resumed_dir=run_folder(killed)
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_start_line_names_the_engine(ddp, engine):
    assert STARTS["ddp"] in ddp.result.stdout
    assert STARTS[engine.name] in engine.result.stdout


@pytest.mark.slow
@pytest.mark.multiprocess
def test_losses_gradient_norms_and_learning_rates_are_ddps(ddp, engine):
    """Same initial weights, batches, dropout masks, normalisation, clipping and schedule: the curves differ only by
    the order of float32 sums (all-reduce, reduce-scatter, ZeRO's buckets) and what bf16 autocast rounds from it."""
    tags = ["train/loss", "train/grad_norm"] + (["eval/loss", "eval_heldout/loss"] if engine.name != "zero3" else [])
    for tag in tags:  # eval: the EMA weights'
        expected, got = scalar_values(ddp.run_dir, tag), scalar_values(engine.run_dir, tag)
        assert len(got) == len(expected) > 1, tag
        assert got == pytest.approx(expected, rel=3e-3), tag
    assert scalar_values(engine.run_dir, "train/learning_rate") == scalar_values(ddp.run_dir, "train/learning_rate")
    metrics, expected = (json.loads((run / "metrics.json").read_text()) for run in (engine.run_dir, ddp.run_dir))
    assert metrics["train"]["optimizer_steps"] == expected["train"]["optimizer_steps"] == 8
    raw, expected_raw = metrics.get("final_raw", metrics["final"]), expected["final_raw"]  # the trained weights'
    assert raw["loss"] == pytest.approx(expected_raw["loss"], rel=3e-3)
    assert "balanced_accuracy" in metrics["final"]  # the user's metric; its loss (focal) trained both runs


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_sigkilled_run_resumes_to_the_uninterrupted_weights(engine):
    """Sharded checkpoints written by every process, checked and loaded like any other: bitwise the same weights
    (and the same EMA, which final/ holds) and metrics as the run that was never interrupted."""
    assert "exitcode  : -9" in engine.crash.stderr  # the launcher then stopped the other process
    assert re.search(r"resumed from \S+step-00000004 ", engine.resumed.stdout), engine.resumed.stdout[-2000:]
    weights = load_file(engine.resumed_dir / "final" / "model.safetensors")
    expected = load_file(engine.run_dir / "final" / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, expected[name]), name
    metrics, expected_metrics = (
        json.loads((run / "metrics.json").read_text()) for run in (engine.resumed_dir, engine.run_dir)
    )
    assert metrics["final"] == expected_metrics["final"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_checkpoints_stay_sharded_and_check_run_verifies_them(engine):
    checkpoints = sorted((engine.run_dir / "checkpoints").iterdir())
    assert {"step-00000006", "step-00000008"} <= {path.name for path in checkpoints}  # keep 2 (and the best's)
    files = {path.relative_to(checkpoints[-1]).as_posix() for path in checkpoints[-1].rglob("*") if path.is_file()}
    if engine.name == "fsdp2":
        assert {"pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp"} <= files
        assert {"ema-rank0.safetensors", "ema-rank1.safetensors"} <= files  # each process's shard of the average
    else:
        stage_files = {f"pytorch_model/{name}" for name in ("zero_pp_rank_0_mp_rank_00_optim_states.pt",)}
        assert stage_files <= files and "latest" in files
        assert ("ema.safetensors" in files) == (engine.name == "zero2")  # whole weights: the main process writes it
    assert not any(name.endswith("model.safetensors") for name in files)  # no process gathered the whole model
    report = run_cli("check-run", str(engine.run_dir))
    assert report.returncode == 0, report.stdout
    assert f"{checkpoints[-1]}: intact (step 8, {STARTS[engine.name].removeprefix('engine ')}" in report.stdout


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_export_is_the_whole_float32_model_pipeline_loads(engine):
    from transformers import pipeline

    weights = load_file(engine.run_dir / "final" / "model.safetensors")
    assert all(tensor.dtype == torch.float32 for tensor in weights.values())
    assert weights["bert.encoder.layer.0.attention.self.query.weight"].shape == (64, 64)  # whole, not a shard
    classify = pipeline("text-classification", model=str(engine.run_dir / "final"), device="cpu")
    assert classify("i feel wonderful today")[0]["label"] in {"sadness", "joy", "love", "anger", "fear", "surprise"}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_lora_under_fsdp_trains_sharded_adapters_and_exports_the_merged_model(tmp_path, cache_dir):
    """Frozen base weights sharded like the rest; the export gathers them, merges on the main process, and the
    merged model scores what the trained adapters scored."""
    result = launch("fsdp2", tmp_path, cache_dir, "model.lora=true", "train.ema_decay=0.9", "train.epochs=1")
    assert result.returncode == 0, failed(result)
    assert "4,486 trainable parameters (0.22% of 2.0M)" in result.stdout  # adapters on query, value + the head
    run_dir = run_folder(tmp_path)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    args = [*tiny_overrides(tmp_path, cache_dir, rows=256, **SETTINGS), "model.lora=true", "train.ema_decay=0.9"]
    scored = run_cli("eval", str(CONFIGS / "tiny_user_code.yaml"), *args, "--model", str(run_dir / "final"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    recorded = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert json.loads(scored.stdout)["loss"] == pytest.approx(recorded["loss"], rel=1e-4)
    assert not any("lora" in name for name in load_file(run_dir / "final" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "config_file, engine", [("fsdp.yaml", "FSDP"), pytest.param("deepspeed_zero2.yaml", "DeepSpeed", marks=DEEPSPEED)]
)
def test_an_engine_accelerate_does_not_run_here_is_refused_in_one_line(config_file, engine, tmp_path, cache_dir):
    """Without the fixture Accelerate would train plain DDP on this CPU, silently: ptrain refuses before any work."""
    launch_args = ["--config_file", str(CONFIGS / "accelerate" / config_file), "--num_processes", "2"]
    result = accelerate_launch(
        launch_args, "ptrain", "train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp_path, cache_dir)
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ptrain: error: ")]
    assert len(set(errors)) == 1, result.stderr[-3000:]  # the same line from both processes
    assert f"the accelerate config asks for {engine}" in errors[0] and "runs ddp (2 processes) on this cpu" in errors[0]
    assert "configs/accelerate/cpu_2proc.yaml" in errors[0]
    assert not (tmp_path / "runs").exists()


def test_what_an_engine_cannot_run_is_refused_before_any_work():
    zero3, fsdp = Engine("deepspeed", 2, zero_stage=3), Engine("fsdp2", 2)
    for override, key in (("train.ema_decay=0.9", "train.ema_decay"), ("model.lora=true", "model.lora")):
        cfg = load_config(CONFIGS / "tiny.yaml", [override])
        with pytest.raises(ConfigError, match=f"^{key} under DeepSpeed ZeRO-3: not supported .* use FSDP"):
            check_supported(cfg, zero3)
        check_supported(cfg, fsdp)
    with pytest.raises(LaunchError, match="fsdp_version 1 in the accelerate config: ptrain runs FSDP2"):
        check_fsdp_plugin(FullyShardedDataParallelPlugin(fsdp_version=1))
    with pytest.raises(LaunchError, match="fsdp_state_dict_type FULL_STATE_DICT .* gathers the whole model"):
        check_fsdp_plugin(FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="FULL_STATE_DICT"))


def test_a_checkpoint_resumes_only_under_the_engine_that_wrote_it(tmp_path):
    def checkpoint(engine: Engine | None) -> Checkpoint:
        return Checkpoint(
            tmp_path / "step-4", {"loop": {"global_step": 4}, **({"engine": engine.to_dict()} if engine else {})}
        )

    zero2, fsdp = Engine("deepspeed", 2, zero_stage=2), Engine("fsdp2", 2)
    check_same_engine(fsdp, checkpoint(fsdp))
    check_same_engine(Engine("ddp", 4), checkpoint(Engine("ddp", 2)))  # whole weights: any process count
    check_same_engine(Engine("single", 1), checkpoint(None))  # written before engines were recorded
    for engine, saved in ((fsdp, zero2), (Engine("fsdp2", 4), fsdp), (fsdp, None), (Engine("ddp", 2), zero2)):
        with pytest.raises(CheckpointError) as refused:
            check_same_engine(engine, checkpoint(saved))
        written = saved.describe() if saved else "one process or DDP"
        assert f"was written under {written}, and this launch runs {engine.describe()}" in str(refused.value)


@DEEPSPEED
def test_deepspeed_takes_ptrains_batch_accumulation_clipping_and_precision(monkeypatch):
    train = load_config(CONFIGS / "tiny.yaml", ["train.gradient_accumulation_steps=4", "train.max_grad_norm=0.5"]).train
    config = deepspeed_plugin(train.model_copy(update={"mixed_precision": "bf16"})).deepspeed_config
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (32, 4)
    assert config["gradient_clipping"] == 0.5 and config["bf16"] == {"enabled": False}
    assert config["torch_autocast"] == {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    check_batch(config, num_processes=2)
    assert config["train_batch_size"] == 256
    monkeypatch.setenv("ACCELERATE_GRADIENT_CLIPPING", "1.0")
    with pytest.raises(LaunchError, match=r"sets gradient_clipping: 1.0, but train.max_grad_norm is 0.5; ptrain"):
        deepspeed_plugin(train)
    with pytest.raises(LaunchError, match="train.mixed_precision=fp16 under DeepSpeed"):
        deepspeed_plugin(train.model_copy(update={"mixed_precision": "fp16", "max_grad_norm": 1.0}))
    with pytest.raises(LaunchError, match="sets train_batch_size: 64, but .* is 256"):
        check_batch({**config, "train_batch_size": 64}, num_processes=2)
    monkeypatch.setattr(deepspeed_settings.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        LaunchError, match=r"asks for DeepSpeed, which is not installed: pip install 'ptrain\[deepspeed\]'"
    ):
        deepspeed_plugin(train)
