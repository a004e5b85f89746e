"""The training recipe, phase by phase: accelerator -> tokenizer and data -> step plan -> run folder -> model,
optimizer and schedule -> prepare -> (resume) -> loop (loop.py) -> export, test scores and metrics.json."""

from __future__ import annotations

import time

from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import PreTrainedTokenizerBase

from ptrain.config import Config, to_yaml
from ptrain.config.references import with_copied_code
from ptrain.data import batching
from ptrain.data.bad_rows import SKIPPED_ROWS_FILE
from ptrain.data.mixture_splits import read_splits, tokenize_mixture
from ptrain.data.mixtures import SourceCollator
from ptrain.data.tokenize import Splits, tokenize_splits
from ptrain.fast_paths import apply_fast_paths
from ptrain.files.atomic import write_text
from ptrain.model.loading import build_model, enable_gradient_checkpointing, load_tokenizer
from ptrain.model.lora import add_lora, plain_model
from ptrain.outputs.export import export_model
from ptrain.outputs.model_card import scores_by_set, write_model_card
from ptrain.outputs.run_dir import claim_run_dir
from ptrain.outputs.tracking import Tracker
from ptrain.runtime.deepspeed_settings import fill_bucket_sizes, model_construction
from ptrain.runtime.distributed import build_accelerator
from ptrain.runtime.engine import Engine, check_supported, engine_of
from ptrain.runtime.fsdp_settings import configure_fsdp
from ptrain.runtime.lost_peer import resume_command
from ptrain.runtime.memory import held_tensor_gib, of_every_process, peak_memory_gib
from ptrain.runtime.nodes import caches_first
from ptrain.runtime.precision import resolve_config_precision
from ptrain.tasks import Task, get_task
from ptrain.tasks.loss import with_user_loss
from ptrain.training.callbacks import Callbacks
from ptrain.training.checkpointing.checkpoint import Checkpoint
from ptrain.training.checkpointing.node_resume import resume_on_every_node, warn_unless_shared
from ptrain.training.checkpointing.preemption import EXIT_CODES, Preemption
from ptrain.training.checkpointing.resume import checkpoint_run, restore, stop_resumably
from ptrain.training.ema import WeightAverage, averaged
from ptrain.training.evaluation import evaluate_and_track, score_split
from ptrain.training.gradients import folds_into_optimizer
from ptrain.training.loop import fit
from ptrain.training.loss_scaling import LossScaling
from ptrain.training.meter import TrainMeter
from ptrain.training.optim import StepPlan, build_optimizer, build_scheduler, plan_steps
from ptrain.training.run import LoopState, Optimisation, Run, RunData, RunOutputs, Runtime
from ptrain.training.source_tokens import fold_source_tokens
from ptrain.training.streamed_data import prepare_streamed_data, stream_plan
from ptrain.training.summary import announce, hparams_of, write_results


def train(cfg: Config) -> int:
    """Fine-tune as the config says; returns the process exit code (non-zero when preempted)."""
    started = time.perf_counter()
    run, checkpoint = setup(cfg)
    accelerator = run.runtime.accelerator
    with run.outputs.lock, stop_resumably(run):  # the lock is released on return, on errors and after signals
        if checkpoint:
            state, meter = restore(accelerator, checkpoint, run.optim.scheduler, streamed=run.data.stream is not None)
            if run.data.stream:  # the next unseen row of this process's stream
                accelerator.print(f"ptrain: {run.data.stream.load(checkpoint.path, accelerator.process_index)}")
        else:
            state, meter = LoopState(), TrainMeter(accelerator.device)
        announce(run, state)
        run.callbacks.dispatch("on_train_start", run, state)
        run.runtime.preemption.install()
        try:
            fit(run, state, meter)
        finally:
            run.runtime.preemption.uninstall()
        if state.interrupted_by:
            return stop_for_preemption(run, state, meter)
        fold_source_tokens(run, state, meter)  # data.mixture: the steps since the last fold, for metrics.json
        if run.data.stream and run.data.stream.ledger:  # data.bad_rows=skip: every process's skipped rows, listed
            main = accelerator.is_main_process
            run.data.stream.ledger.fold(run.data.splits.bad_rows, run.outputs.run_dir if main else None)
        finish(run, state, time.perf_counter() - started, held_gib=held_tensor_gib())  # between steps, before export
    return 0


def setup(cfg: Config, track: bool = True) -> tuple[Run, Checkpoint | None]:
    """Everything before the first step. Data errors and the step plan come before the run folder exists.
    run.cfg holds train.mixed_precision as resolved for this device (what config.yaml records)."""
    cfg, precision = resolve_config_precision(cfg)
    accelerator = build_accelerator(cfg)  # refuses launches whose processes did not join one group
    engine = engine_of(accelerator)
    check_supported(cfg, engine)  # what this engine cannot run, before any work
    set_seed(cfg.train.seed)
    checkpoint = resume_on_every_node(cfg, accelerator)  # train.resume's checkpoint, readable on every node
    task = get_task(cfg.task)
    data = prepare_data(cfg, task, accelerator)
    plan = (
        stream_plan(cfg, accelerator.num_processes, accelerator.device)
        if data.stream
        else plan_steps(len(data.train_loader), cfg.train)
    )
    # No other process may train in the folder: refused here before anything is written into it.
    resumed = checkpoint.run_dir if checkpoint else None
    run_dir, lock = claim_run_dir(accelerator, cfg.output_dir, cfg.name, cfg.run_dir, resumed)
    with lock.released_on_error():  # until train() holds it
        warn_unless_shared(accelerator, run_dir)
        if accelerator.is_main_process and not checkpoint:
            write_text(run_dir / "config.yaml", to_yaml(with_copied_code(cfg, run_dir)))  # user code: copies in code/
        if accelerator.is_main_process and cfg.data.bad_rows == "skip":
            write_text(run_dir / SKIPPED_ROWS_FILE, data.splits.bad_rows.jsonl())
        optim = prepare_optimisation(cfg, task, data, plan, accelerator, engine)
        # A resumed run hides the events it logged after its checkpoint: one step axis, no duplicates.
        purge_step = checkpoint.step + 1 if checkpoint else None
        tracker = Tracker(
            run_dir,
            track and accelerator.is_main_process,
            purge_step=purge_step,
            report_to=cfg.train.report_to,
            experiment=cfg.name,
            hyperparameters=hparams_of(cfg),
        )
        run = Run(
            cfg=cfg,
            task=task,
            runtime=Runtime(
                accelerator=accelerator,
                engine=engine,
                loss_scaling=LossScaling(accelerator),
                preemption=Preemption(),
                precision=precision,
            ),
            data=data,
            optim=optim,
            outputs=RunOutputs(run_dir=run_dir, tracker=tracker, lock=lock),
            callbacks=Callbacks(cfg.train.callbacks),
        )
    return run, checkpoint


def load_data(cfg: Config, task: Task, accelerator: Accelerator) -> tuple[PreTrainedTokenizerBase, Splits]:
    """Tokenizer and tokenized splits. The main process (trains the tokenizer and) tokenizes first, or reads
    the caches; then the first process of each other node (into its node's cache folder, when not shared); the
    others then read their node's caches."""
    with caches_first(accelerator):
        raw, bad_rows = read_splits(cfg, task)
        tokenizer = load_tokenizer(cfg, task, raw["train"])
        tokenize = tokenize_mixture if cfg.data.mixture else tokenize_splits  # a mixture's train comes finished
        splits = tokenize(cfg, raw, tokenizer, task, task.label_names(cfg, raw["train"]))
    splits.bad_rows = bad_rows
    for split in [split for split in splits.tokenized if not (split == "train" and splits.mixture)]:
        splits.tokenized[split], counts = task.finish_split(cfg, split, splits.tokenized[split], raw[split])
        if counts is not None:
            splits.counts[split] = counts
    tokenizer.model_max_length = cfg.data.max_length  # saved with every export: predict and pipeline() cut there
    return tokenizer, splits


def prepare_data(cfg: Config, task: Task, accelerator: Accelerator) -> RunData:
    """Tokenizer, splits and the training and validation loaders, prepared by Accelerate."""
    if cfg.data.streaming:
        return prepare_streamed_data(cfg, task, accelerator)
    tokenizer, splits = load_data(cfg, task, accelerator)
    collator = task.collator(cfg, tokenizer, accelerator.device)
    train_collator = SourceCollator(collator, len(cfg.data.mixture)) if splits.mixture else collator
    train_loader, shuffle = batching.train_loader(cfg, splits.tokenized["train"], train_collator, accelerator.device)
    eval_loader, eval_sets = batching.evaluation_loaders(cfg, splits.tokenized, collator)
    train_loader, eval_loader = accelerator.prepare(train_loader, eval_loader)
    eval_sets = {name: accelerator.prepare(loader) for name, loader in eval_sets.items()}
    return RunData(
        tokenizer=tokenizer,
        splits=splits,
        train_loader=train_loader,
        eval_loader=eval_loader,
        shuffle=shuffle,
        eval_sets=eval_sets,
    )


def prepare_optimisation(
    cfg: Config, task: Task, data: RunData, plan: StepPlan, accelerator: Accelerator, engine: Engine
) -> Optimisation:
    """Model, optimizer and schedule, prepared by Accelerate in one call (DeepSpeed wraps and checkpoints only a
    schedule prepared with its model), and the task's loss."""
    with model_construction(accelerator.state.deepspeed_plugin):  # ZeRO-3: whole or partitioned, as configured
        model = load_model(cfg, task, data)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(plain_model(model))
    # inside LoRA's wrapper: adapters run inside the patched modules
    fast_paths = apply_fast_paths(plain_model(model), accelerator, cfg.train.fast_paths)
    if engine.name == "fsdp2":
        configure_fsdp(accelerator.state.fsdp_plugin, model)
    if engine.name == "deepspeed":
        fill_bucket_sizes(accelerator.state.deepspeed_plugin.deepspeed_config, model)
    optimizer = build_optimizer(model, cfg.train)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, build_scheduler(optimizer, plan, cfg.train))
    loss_fn = with_user_loss(cfg.train, task.build_loss(cfg, data.splits)).to(accelerator.device)
    ema = WeightAverage(model, cfg.train.ema_decay, engine) if cfg.train.ema_decay else None
    if ema is not None:
        ema.checkpoint_with(accelerator)  # before any resume loads the state
    return Optimisation(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=loss_fn,
        plan=plan,
        ema=ema,
        clip_in_optimizer=folds_into_optimizer(accelerator, optimizer, engine),
        fast_paths=tuple(fast_paths),
    )


def load_model(cfg: Config, task: Task, data: RunData):
    """The task's model (or model.builder's); with model.lora, wrapped in trainable LoRA adapters over its frozen
    weights."""
    model = build_model(cfg, task.load_model, data.splits.label_names, data.tokenizer)
    if cfg.model.lora is None:
        return model
    return add_lora(model, cfg.model.lora, task.peft_task_type)


def stop_for_preemption(run: Run, state: LoopState, meter: TrainMeter) -> int:
    """The current optimizer step is done: checkpoint it and say how to continue."""
    path = checkpoint_run(run, state, meter) if state.last_checkpoint_step != state.global_step else None
    run.outputs.tracker.close()
    where = path or f"the checkpoint of step {state.global_step}"
    run.runtime.accelerator.print(
        f"ptrain: stopped by {state.interrupted_by} after step {state.global_step}; saved {where}\n"
        f"ptrain: continue with: {resume_command()}"
    )
    return EXIT_CODES[state.interrupted_by]


def finish(run: Run, state: LoopState, wall_seconds: float, held_gib: float) -> None:
    """Final evaluation if the last step was not scored, final/ export (and adapter/ with model.lora), test scores,
    metrics.json (with `held_gib`, the tensor memory this process held after the last step)."""
    accelerator, run_dir = run.runtime.accelerator, run.outputs.run_dir
    meter = TrainMeter(accelerator.device)
    if state.last_eval_step != state.global_step:
        evaluate_and_track(run, state, meter)
    with averaged(run.optim.ema):
        export_model(accelerator, run.optim.model, run.data.tokenizer, run_dir / "final", run_dir / "adapter")
        test = score_test_split(run) if "test" in run.data.splits.tokenized else None
    scores = {**scores_by_set(state.last), **({"test": test} if test else {})}
    write_model_card(run, run_dir / "final", scores, state.global_step)
    raw_final = score_raw_weights(run)
    memory = {
        "peak_memory_gib": of_every_process(accelerator, peak_memory_gib(accelerator.device)),
        "tensor_memory_gib": of_every_process(accelerator, held_gib),
    }
    write_results(run, state, test, wall_seconds, memory, raw_final=raw_final)
    run.outputs.tracker.close()
    run.callbacks.dispatch("on_train_end", run, state)


def score_raw_weights(run: Run) -> dict[str, float] | None:
    """With train.ema_decay, the validation scores of the trained weights themselves (final/ holds the EMA)."""
    if run.optim.ema is None:
        return None
    return score_split(run, run.data.eval_loader, "validation")[0].metrics


def score_test_split(run: Run) -> dict[str, float]:
    cfg, data, accelerator = run.cfg, run.data, run.runtime.accelerator
    collator = run.task.collator(cfg, data.tokenizer, accelerator.device)
    loader = accelerator.prepare(batching.eval_loader(cfg, data.splits.tokenized["test"], collator))
    return score_split(run, loader, "test")[0].metrics
