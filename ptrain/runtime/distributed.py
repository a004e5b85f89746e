"""The Accelerator for every launch (one process, N CPU processes over gloo, N GPUs, nodes, FSDP, DeepSpeed), with
the collective timeout that ends a run waiting on a frozen peer; the refusal of a launch whose processes did not join
one process group (each would silently train alone)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs, TorchDynamoPlugin

from ptrain.config import Config
from ptrain.errors import LaunchError
from ptrain.runtime.deepspeed_settings import check_batch, deepspeed_plugin
from ptrain.runtime.engine import asked_engine, check_engine, check_fsdp_plugin, engine_of

# Where launchers put the number of processes: torchrun and `accelerate launch --multi_gpu` (WORLD_SIZE),
# mpirun flavours (the others). The same list, in another order, that Accelerate reads for CPU groups.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# The launch that forms one group with or without GPUs (without them ptrain's cpu=True makes it gloo).
GROUP_LAUNCH = "accelerate launch --multi_gpu --num_processes N -m ptrain train CONFIG"


def build_accelerator(cfg: Config) -> Accelerator:
    """The Accelerator, after refusing launches that would not give the processes the user asked for. The config's
    train.mixed_precision must already be resolved (training.precision.resolve_config_precision): it is resolved
    once per command, where its reason and warning are printed."""
    if cfg.train.mixed_precision == "auto":
        raise ValueError("build_accelerator needs a resolved train.mixed_precision: call resolve_config_precision")
    refuse_single_process_launcher(os.environ)
    launched = launched_world_size(os.environ)  # read first: Accelerate rewrites WORLD_SIZE for CPU groups
    asked = asked_engine(os.environ)
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        # Without CUDA, processes started by `--multi_gpu` or torchrun join one gloo group only with cpu=True;
        # otherwise each one runs alone with num_processes == 1.
        cpu=not torch.cuda.is_available(),
        # Host-to-GPU copies of pinned batches overlap the previous step (no effect on CPU).
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
        # One scheduler step per optimizer step, skipped steps included, under every engine (Accelerate's default
        # steps it once per process, and not at all after a step its grad scaler or DeepSpeed skipped).
        step_scheduler_with_optimizer=False,
        deepspeed_plugin=deepspeed_plugin(cfg.train) if asked == "deepspeed" else None,
        dynamo_plugin=compile_plugin(cfg.train.compile, os.environ),
        kwargs_handlers=[process_group_settings(cfg.train.collective_timeout_seconds)],
    )
    check_one_group(launched, accelerator.num_processes)
    engine = engine_of(accelerator)
    check_engine(asked, engine, accelerator.device.type)
    if engine.name == "fsdp2":
        check_fsdp_plugin(accelerator.state.fsdp_plugin)
    if engine.name == "deepspeed":
        check_batch(accelerator.state.deepspeed_plugin.deepspeed_config, accelerator.num_processes)
    return accelerator


def compile_plugin(compile_model: bool, environ: Mapping[str, str]) -> TorchDynamoPlugin:
    """train.compile as Accelerate's dynamo plugin: torch.compile with inductor and dynamic lengths (one graph for
    every batch shape, measured against bucketed static shapes in docs/engines.md), or none. An accelerate config's
    own dynamo settings would compile behind ptrain's back: refused, naming the key to use instead."""
    asked = environ.get("ACCELERATE_DYNAMO_BACKEND", "no").lower()
    if asked not in ("no", "inductor" if compile_model else "no"):
        raise LaunchError(
            f"the accelerate config sets dynamo_backend {asked.upper()}; ptrain compiles with train.compile=true "
            "(inductor): remove dynamo_config from the accelerate config"
        )
    return TorchDynamoPlugin(backend="inductor" if compile_model else "no", dynamic=True if compile_model else None)


def launched_world_size(environ: Mapping[str, str]) -> int:
    """Processes the launcher started in all (1 when none of its variables is set: a plain `python -m ptrain`)."""
    for name in WORLD_SIZE_VARIABLES:
        if environ.get(name, "").strip().isdigit() and int(environ[name]) > 0:
            return int(environ[name])
    return 1


def refuse_single_process_launcher(environ: Mapping[str, str]) -> None:
    """`accelerate launch --cpu --num_processes N` (and `--num_processes N` alone on a machine without GPUs)
    start ONE process in Accelerate 1.15: its single-process launcher only runs N through mpirun.

    That launcher always sets ACCELERATE_USE_CPU and sets MASTER_ADDR only when more than one process or
    machine was asked for; a real N-process launch also sets a world size. The count itself is not recorded.
    """
    asked_for_several = "ACCELERATE_USE_CPU" in environ and "MASTER_ADDR" in environ
    if asked_for_several and launched_world_size(environ) == 1:
        raise LaunchError(
            "accelerate launch started one process although several were asked for (its --cpu and plain "
            f"launchers start one without mpirun); run: {GROUP_LAUNCH} (or unset MASTER_ADDR for one process)"
        )


def check_one_group(launched: int, joined: int) -> None:
    """Every launched process must be in the group, or each would train alone on the whole data."""
    if launched != joined:
        raise LaunchError(
            f"the launcher started {launched} processes but this one is in a group of {joined}, so each would "
            f"train alone on all the data; launch with: {GROUP_LAUNCH.replace(' N ', f' {launched} ')} "
            "(on GPUs and without them alike)"
        )


def process_group_settings(timeout_seconds: float) -> InitProcessGroupKwargs:
    """The process group's timeout: gloo and NCCL give up on any one collective after it. Accelerate passes the
    timeout on only when it differs from its own default (600 s), which would leave gloo at torch's 30 minutes, so
    exactly 600 s goes as 600 s and a microsecond."""
    settings = InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_seconds))
    if "timeout" not in settings.to_kwargs():
        settings.timeout += timedelta(microseconds=1)
    return settings
