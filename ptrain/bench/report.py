"""`ptrain bench`'s report: the table of every side measured, the ratios and warnings on stdout, and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from ptrain.runtime.hardware import hardware_line


def print_report(report: dict, json_path: str | None) -> None:
    sides = [
        ("ptrain", "ptrain"),
        ("HF Trainer", "hf_trainer"),
        ("TRL default", "trl_default"),
        ("TRL packed", "trl_packed"),
    ]
    print(
        f"bench {report['config']}: {report['steps']} timed steps after {report['warmup_steps']} warm-up; "
        f"{report['device']}: {hardware_line(report['hardware'])}; precision {report['precision']} "
        f"({report['precision_reason']}), batch "
        f"{report['per_device_batch_size']}, group_by_length {report['group_by_length']}; measured matmul peak "
        f"{report['matmul_peak_tflops'] * 1000:,.0f} GFLOP/s; {report['train_flops_per_token'] / 1e6:.0f} "
        f"MFLOP per trained token"
    )
    print(
        f"{'':<22}{'real tok/s':>11}{'labelled/s':>11}{'samples/s':>11}{'padding':>9}{'data wait':>11}"
        f"{'peak RSS':>10}{'MFU':>7}"
    )
    for phase in ("train", "eval"):
        for name, key in sides:
            if phase in report.get(key, {}):
                s = report[key][phase]
                labelled = f"{s['labelled_tokens_per_second']:,.0f}" if "labelled_tokens_per_second" in s else "-"
                padding = f"{s['padding_fraction']:.1%}" if "padding_fraction" in s else "-"
                wait = f"{s['data_wait_share']:.1%}" if "data_wait_share" in s else "-"
                print(
                    f"{name + ' ' + phase:<22}{s['tokens_per_second']:>11,.0f}{labelled:>11}"
                    f"{s['samples_per_second']:>11,.1f}{padding:>9}{wait:>11}{s['peak_rss_gib']:>8.2f}Gi{s['mfu']:>7.1%}"
                )
    for phase, ratio in report.get("ratios", {}).items():
        print(f"ptrain / HF Trainer, {phase} real tokens/s: {ratio:.2f}x")
    for settings, ratio in report.get("trl_ratios", {}).items():
        print(
            f"ptrain / TRL {settings}, train real tokens/s: {ratio['tokens_per_second']:.2f}x "
            f"(labelled tokens/s: {ratio['labelled_tokens_per_second']:.2f}x)"
        )
    for warning in report.get("warnings", []):
        print(f"warning: {warning}")
    if "loss_check" in report:
        print_loss_check(report["loss_check"])
    if "profile" in report:
        from ptrain.bench.profile import print_breakdown

        print_breakdown(report["profile"])
    write_json_report(report, json_path)


def write_json_report(report: dict, json_path: str | None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))


def print_loss_check(report: dict) -> None:
    print(
        f"validation loss after {report['epochs']} epoch(s) of the same conversations, scored by ptrain's evaluation:"
    )
    for name, key in (("ptrain", "ptrain"), ("TRL default", "trl_default"), ("TRL packed", "trl_packed")):
        side = report[key]
        print(
            f"  {name:<12} {side['validation_loss']:.4f} after {side['steps']:,} steps, "
            f"{side['labelled_tokens']:,} labelled tokens"
        )
    for settings, difference in report["relative_difference"].items():
        print(f"TRL {settings} / ptrain validation loss: {difference:+.2%}")
