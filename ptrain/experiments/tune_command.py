"""`ptrain tune`'s command line: its options, their checks (every range and config before the first trial), and
the study they open."""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path

from ptrain.errors import SweepError
from ptrain.experiments.tune_space import SET_BY_TUNE, parse_enqueued, parse_space
from ptrain.experiments.tune_study import PRUNERS, SAMPLERS


def add_tune_command(commands) -> None:
    sub = commands.add_parser("tune", help="search CONFIG's keys with Optuna: TPE, random or grid, with pruning")
    sub.add_argument("config")
    sub.add_argument("overrides", nargs="*", help="key=value overrides of every trial")
    sub.add_argument(
        "--param",
        action="append",
        default=[],
        help="key=loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH[:STEP] or choice:A,B (repeat per key)",
    )
    sub.add_argument("--trials", type=int, default=20, help="trials in the whole study, all processes together")
    sub.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    sub.add_argument("--pruner", default="median", choices=PRUNERS)
    sub.add_argument("--startup-trials", type=int, default=5, help="trials before TPE models and median prunes")
    sub.add_argument("--seed", type=int, help="the sampler's seed")
    sub.add_argument("--direction", choices=["minimize", "maximize"], help="default: from the metric")
    sub.add_argument("--study", help="study name and folder; default tune-<hash of config and ranges>")
    sub.add_argument("--storage", help="Optuna database URL; default sqlite:///STUDY_DIR/study.db")
    sub.add_argument("--enqueue", action="append", default=[], help="'key=value ...': a trial to run first")
    sub.add_argument("--launcher", help="how to start python per trial, e.g. 'accelerate launch --num_processes 2'")
    sub.set_defaults(run=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    from ptrain.experiments.tune import Tuning, check_trials_fit, report_end, run_trials, study_lock
    from ptrain.experiments.tune_study import make_pruner, make_sampler, open_storage, require_optuna

    optuna = require_optuna()
    params = parse_space(args.param)
    enqueued = [parse_enqueued(text, params) for text in args.enqueue]
    cfg, metric, lower = check_configs(args.config, args.overrides, params)
    spec = {"config": str(Path(args.config).resolve()), "fixed": args.overrides, "params": args.param}
    name = args.study or "tune-" + hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    study_dir = Path(cfg.output_dir) / cfg.name / name
    study_dir.mkdir(parents=True, exist_ok=True)
    tuning = Tuning(
        config=args.config,
        fixed=list(args.overrides),
        params=params,
        metric=metric,
        study_dir=study_dir,
        storage_url=args.storage or f"sqlite:///{study_dir.resolve() / 'study.db'}",
        study_name=name,
        pruner=(args.pruner, args.startup_trials),
        trials=args.trials,
        prefix=shlex.split(args.launcher) if args.launcher else [sys.executable],
        callbacks=list(cfg.train.callbacks),
    )
    check_trials_fit(tuning, args.sampler)
    with study_lock(tuning):  # two processes creating one SQLite file's tables at once: the second fails
        study = optuna.create_study(
            storage=open_storage(tuning.storage_url),
            study_name=name,
            sampler=make_sampler(args.sampler, params, args.startup_trials, args.seed),
            pruner=make_pruner(*tuning.pruner),
            direction=args.direction or ("minimize" if lower else "maximize"),
            load_if_exists=True,
        )
    for values in enqueued:
        study.enqueue_trial(values, skip_if_exists=True)
    print(f"ptrain: tune {study_dir}: {tuning.trials} trials, {args.sampler} sampler, {args.pruner} pruner, {metric}")
    ran = run_trials(tuning, study)
    report_end(tuning, study, ran)
    return 0


def check_configs(config: str, fixed: list[str], params) -> tuple:
    """Every range's bounds (or choices) validated as configs before the first trial; the first config, its
    metric and whether lower is better."""
    from ptrain.tasks import get_task, load_config
    from ptrain.training.best import BestRule

    for override in fixed:
        if override.partition("=")[0] in SET_BY_TUNE:
            raise SweepError(f"'{override}': ptrain tune sets {override.partition('=')[0]} itself for every trial")
    base = [f"{p.key}={p.corners()[0]}" for p in params]
    first = load_config(config, [*fixed, *base])
    for index, param in enumerate(params):
        for value in param.corners()[1:]:
            load_config(config, [*fixed, *base[:index], f"{param.key}={value}", *base[index + 1 :]])
    rule = BestRule.of(first, get_task(first.task))
    return first, rule.metric, rule.lower_is_better
