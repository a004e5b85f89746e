"""`ptrain <command> ...`: train, check, eval, predict, generate, chat, bench, sweep, tune, runs, report, check-run.
User mistakes print one line and exit 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from ptrain.errors import PtrainError
from ptrain.experiments.tune_command import add_tune_command
from ptrain.inference.zero_shot import add_zero_shot_options, run_zero_shot
from ptrain.runtime.allocator import keep_freed_memory

USAGE_EXIT = 2
LOST_PEER_EXIT = 1  # a launched run lost a process: not the user's mistake
# Commands that read YAML and JSON only: they import no torch, transformers or datasets (tests/test_fast_cli.py),
# so they answer in well under a second.
WITHOUT_LIBRARIES = ("check", "runs", "check-run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptrain", description="Fine-tune Hugging Face models from a YAML config.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("train", "train as CONFIG says"), ("check", "validate CONFIG only (no model, no data)")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("config", help="YAML config file")
        sub.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=2")
    sub = commands.add_parser("eval", help="score an exported model on a split of CONFIG's data")
    sub.add_argument("config")
    sub.add_argument("overrides", nargs="*")
    sub.add_argument("--model", required=True, help="exported model folder, e.g. runs/NAME/TIME/best")
    sub.add_argument("--split", default="validation", choices=["validation", "test"])
    sub.add_argument(
        "--predictions",
        metavar="FILE",
        help="also write one row per example (.csv, .tsv or .jsonl): text, gold, "
        "predicted, per-class probabilities, loss",
    )
    sub = commands.add_parser("bench", help="training throughput of ptrain (and the HF Trainer) on CONFIG's job")
    sub.add_argument("config")
    sub.add_argument("overrides", nargs="*")
    sub.add_argument("--steps", type=int, default=100, help="timed optimizer steps")
    sub.add_argument("--warmup-steps", type=int, default=10, help="untimed steps first")
    sub.add_argument("--compare-hf", action="store_true", help="also time transformers.Trainer on the same job")
    sub.add_argument("--compare-trl", action="store_true", help="chat: also time TRL's SFTTrainer, default and packed")
    sub.add_argument(
        "--loss-check", action="store_true", help="with --compare-trl: validation losses after train.epochs"
    )
    sub.add_argument(
        "--time-to",
        metavar="METRIC=VALUE",
        help="instead: wall time until validation METRIC reaches VALUE, e.g. weighted_f1=0.92",
    )
    sub.add_argument(
        "--profile",
        nargs="?",
        const="runs/profile",
        metavar="DIR",
        help="also profile 10 steps: time per category, and a torch.profiler trace in DIR (default runs/profile)",
    )
    sub.add_argument("--json", help="also write the report to this JSON file")
    sub = commands.add_parser("predict", help="label every text of a file with an exported model")
    sub.add_argument("--model", required=True)
    sub.add_argument("--input", required=True, help="CSV, TSV, JSONL or TXT (one text per line)")
    sub.add_argument("--output", default="-", help=".csv, .tsv or .jsonl file; - (default) prints JSONL")
    sub.add_argument("--text-column", help="default: text (question answering: question)")
    sub.add_argument(
        "--text-pair-column", help="the second text of a sentence-pair model (question answering: default context)"
    )
    sub.add_argument("--batch-size", type=int, default=64)
    add_precision_option(sub)
    add_zero_shot_options(sub)
    add_experiment_commands(commands)
    add_generate_command(commands)
    return parser


def add_generate_command(commands) -> None:
    sub = commands.add_parser("generate", help="continue prompts with an exported causal language model")
    sub.add_argument("--model", required=True, help="exported model folder, e.g. runs/NAME/TIME/best")
    sub.add_argument("--prompt", action="append", required=True, help="text to continue (repeat for several)")
    sub.add_argument("--max-new-tokens", type=int, default=100)
    sub.add_argument("--greedy", action="store_true", help="most likely token each step (ignores the sampling options)")
    sub.add_argument("--temperature", type=float, default=1.0)
    sub.add_argument("--top-k", type=int, default=50, help="sample among the K likeliest tokens (0: all)")
    sub.add_argument(
        "--top-p", type=float, default=None, help="sample among the likeliest tokens holding P of the mass"
    )
    sub.add_argument("--seed", type=int, default=0)
    add_precision_option(sub)
    sub = commands.add_parser("chat", help="talk to an exported causal LM: stdin lines in, answers out (/reset, /exit)")
    sub.add_argument("--model", required=True, help="exported model folder whose tokenizer has a chat template")
    sub.add_argument("--system", help="a system message opening the conversation")
    sub.add_argument("--max-new-tokens", type=int, default=256)
    sub.add_argument("--temperature", type=float, help="sample at this temperature (default: greedy)")
    sub.add_argument("--top-p", type=float, help="sample among the likeliest tokens holding P of the mass")
    sub.add_argument("--seed", type=int, default=0)
    add_precision_option(sub)


def add_precision_option(sub) -> None:
    meaning = "autocast dtype on the CPU: auto (bf16 where native, else fp32), no (fp32) or bf16"
    sub.add_argument("--precision", default="auto", choices=["auto", "no", "bf16", "fp16"], help=meaning)


def run_generate(args: argparse.Namespace) -> int:
    from ptrain.inference.generate import Sampling, generate_command

    sampling = Sampling(args.max_new_tokens, args.greedy, args.temperature, args.top_k, args.top_p, args.seed)
    for prompt, text in zip(args.prompt, generate_command(args.model, args.prompt, sampling, args.precision)):
        print(f"=== {prompt!r}\n{prompt}{text}")
    return 0


def run_chat(args: argparse.Namespace) -> int:
    from ptrain.inference.chat import Sampling, chat_command

    greedy = args.temperature is None and args.top_p is None
    sampling = Sampling(args.max_new_tokens, greedy, args.temperature or 1.0, 0, args.top_p, args.seed)
    return chat_command(args.model, sampling, args.system, args.precision)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in WITHOUT_LIBRARIES:
        quiet_libraries()
    keep_freed_memory()
    try:
        code = run_command(args)
        leave_process_group(together=True)
        return code
    except PtrainError as err:
        print(f"ptrain: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", USAGE_EXIT)  # OutputError (a full disk): 1
    except BrokenPipeError:  # `ptrain runs | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0
    except RuntimeError as err:  # a collective that lost another process; anything else propagates
        from ptrain.runtime.lost_peer import lost_peer_message

        message = lost_peer_message(err, args.command)
        if message is None:
            raise
        print(f"ptrain: error: {message}", file=sys.stderr)
        return LOST_PEER_EXIT
    finally:
        leave_process_group()


def leave_process_group(together: bool = False) -> None:
    """Tear a launched run's process group down before exit, as PyTorch asks: left to interpreter shutdown,
    gloo's threads were seen to abort one rank of a two-process `ptrain eval` ("terminate called without an
    active exception") after its work was done. After a command that ended well on every process (`together`),
    they first wait for each other, so that none tears the group down while another still works in it (a
    two-process FSDP2 run was seen to abort that way, under load, after its last step)."""
    distributed = sys.modules.get("torch.distributed")  # never imported by check, runs, ...: nothing to do
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        if together:
            distributed.barrier()
        distributed.destroy_process_group()


def run_command(args: argparse.Namespace) -> int:
    if args.command in EXPERIMENT_COMMANDS:
        return run_experiment_command(args)
    if args.command in ("generate", "predict", "chat"):
        return {"generate": run_generate, "predict": run_predict, "chat": run_chat}[args.command](args)
    from ptrain.tasks import load_config

    cfg = load_config(args.config, args.overrides)
    return CONFIG_COMMANDS[args.command](cfg, args)


def run_check(cfg, args: argparse.Namespace) -> int:
    from ptrain.config import to_yaml

    print(to_yaml(cfg), end="")
    print(f"ptrain: {args.config} is valid", file=sys.stderr)
    return 0


def run_train(cfg, args: argparse.Namespace) -> int:
    """The recipe the config's task names (Task.recipe): the optimizer loop, or the linear probe's fit."""
    from ptrain.tasks import get_task

    if get_task(cfg.task).recipe == "linear_probe":
        from ptrain.training.probe import train_probe

        return train_probe(cfg)
    from ptrain.training.recipe import train

    return train(cfg)


def run_eval(cfg, args: argparse.Namespace) -> int:
    from ptrain.inference.evaluate import evaluate_export

    print(json.dumps(evaluate_export(cfg, args.model, args.split, args.predictions), indent=2))
    return 0


def run_bench(cfg, args: argparse.Namespace) -> int:
    from ptrain.bench.command import run_bench as bench_command

    return bench_command(cfg, args)


def run_predict(args: argparse.Namespace) -> int:
    if args.candidate_labels is not None or args.hypothesis_template is not None:
        return run_zero_shot(args)
    from ptrain.inference.predict import predict_file

    count = predict_file(
        args.model, args.input, args.output, args.text_column, args.batch_size, args.precision, args.text_pair_column
    )
    if args.output != "-":
        print(f"ptrain: {count} predictions written to {args.output}", file=sys.stderr)
    return 0


CONFIG_COMMANDS = {"check": run_check, "train": run_train, "eval": run_eval, "bench": run_bench}


EXPERIMENT_COMMANDS = ("sweep", "tune", "runs", "report", "check-run")


def add_experiment_commands(commands) -> None:
    sub = commands.add_parser("sweep", help="train every point of a grid of CONFIG's keys, one after another")
    sub.add_argument("config")
    sub.add_argument(
        "grid", nargs="+", help="key=v1,v2 (swept) or key=value (fixed), e.g. train.learning_rate=1e-4,3e-4"
    )
    sub.add_argument("--seeds", help="comma-separated train.seed values, e.g. 0,1,2 (another grid axis)")
    sub.add_argument("--id", dest="sweep_id", help="sweep folder name; default sweep-<hash of config and grid>")
    sub.add_argument(
        "--launcher", help="how to start python for each point, e.g. 'accelerate launch --num_processes 2'"
    )
    add_tune_command(commands)
    sub = commands.add_parser("runs", help="table of the runs under DIR: varied keys, metrics, steps, time, status")
    sub.add_argument("dir", nargs="?", default="runs", help="a folder of runs, e.g. runs/NAME/SWEEP (default runs)")
    sub.add_argument("--sort", help="column to sort by, e.g. best_weighted_f1 or final_loss (best first)")
    sub.add_argument("--format", default="table", choices=["table", "csv", "json"])
    sub = commands.add_parser("report", help="RUN/report.md and its PNGs: data, curves, confusions, examples")
    sub.add_argument("run", help="a run folder, e.g. runs/emotion/20261121-120000")
    sub.add_argument("--model", default="best", choices=["best", "final"], help="the export to score (default best)")
    sub = commands.add_parser("check-run", help="verify every checkpoint and export of RUN against its manifest")
    sub.add_argument("run", help="a run folder, e.g. runs/emotion/20261121-120000")


def run_experiment_command(args: argparse.Namespace) -> int:
    if args.command == "tune":
        return args.run(args)
    if args.command == "sweep":
        from ptrain.experiments.sweep import sweep

        return sweep(args.config, args.grid, args.seeds, args.sweep_id, args.launcher)
    if args.command == "check-run":
        from ptrain.experiments.check_run import check_run

        return check_run(Path(args.run))
    if args.command == "report":
        from ptrain.experiments.report import write_report

        print(f"ptrain: report written to {write_report(Path(args.run), args.model)}")
        return 0
    from ptrain.experiments.runs_table import render, runs_report

    print(render(runs_report(Path(args.dir), args.sort), args.format))
    return 0


def quiet_libraries() -> None:
    """Silence library chatter that means nothing to a user; our own messages stay."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # train.report_to=[mlflow]: no store set-up lines
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    import torch

    if not torch.cuda.is_available():  # DeepSpeed's own fallback, chosen without its warning (transformers imports it)
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    for handler in logging.getLogger("DeepSpeed").handlers:  # DeepSpeed logs to stdout, where eval prints its JSON
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
            handler.stream = sys.stderr  # not setStream, which flushes the old stream first
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # read failures are reported by ptrain, with the line
