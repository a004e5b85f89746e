"""`ptrain bench`'s command: which measurement the options ask for, then its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ptrain.bench.report import print_report, write_json_report
from ptrain.bench.throughput import bench
from ptrain.bench.time_to import print_time_to_target, time_to_target
from ptrain.bench.trl_sft import check_trl_options
from ptrain.errors import ConfigError


def run_bench(cfg, args: argparse.Namespace) -> int:
    """`ptrain bench CONFIG`: throughput (with --compare-hf, --compare-trl, --loss-check, --profile) or --time-to."""
    check_trl_options(cfg, args.compare_trl, args.loss_check, args.time_to)
    if cfg.data.streaming:  # its measurements read the tokenized training split
        raise ConfigError(
            "ptrain bench does not measure data.streaming yet; bench the config without it, and read a streamed "
            "run's tok/s on ptrain train's step lines (train/tokens_per_second in TensorBoard)"
        )
    if args.time_to:
        report = time_to_target(cfg, args.time_to, args.compare_hf)
        print_time_to_target(report)
        write_json_report(report, args.json)
        return 0
    profile_dir = Path(args.profile) / cfg.name if args.profile else None
    report = bench(cfg, args.steps, args.warmup_steps, args.compare_hf, profile_dir, args.compare_trl)
    if args.loss_check:
        from ptrain.bench.loss_check import loss_check

        report["loss_check"] = loss_check(cfg)
    print_report(report, args.json)
    return 0
