"""The train.callbacks entry `ptrain tune` adds to each trial: every evaluation's metric is reported to the trial in
Optuna's storage, and when the pruner says so the run stops early (final evaluation, export, metrics.json) and
writes pruned.json in its folder. The trial is named by the environment the tune process sets."""

from __future__ import annotations

import json
import os

STORAGE_ENV, STUDY_ENV, TRIAL_ENV, PRUNER_ENV = (
    "PTRAIN_TUNE_STORAGE",
    "PTRAIN_TUNE_STUDY",
    "PTRAIN_TUNE_TRIAL_ID",
    "PTRAIN_TUNE_PRUNER",
)
METRIC_ENV = "PTRAIN_TUNE_METRIC"
PRUNED_FILE = "pruned.json"
REFERENCE = "ptrain.experiments.tune_pruning:ReportToTrial"


class ReportToTrial:
    """Reports from the main process only; its stop request reaches the others (callbacks.agreed)."""

    def __init__(self):
        self.trial = None

    def on_evaluate(self, view) -> None:
        if not view.is_main_process or TRIAL_ENV not in os.environ:
            return
        if self.trial is None:
            self.trial = open_trial()
        metric = os.environ[METRIC_ENV]
        value = view.metrics.get(metric)
        if value is None:
            return
        self.trial.report(float(value), view.step)
        if self.trial.should_prune():
            record = {"step": view.step, "metric": metric, "value": float(value)}
            (view.run_dir / PRUNED_FILE).write_text(json.dumps(record) + "\n")
            print(f"ptrain: tune: pruned at step {view.step} ({metric} {float(value):.4f})", flush=True)
            view.request_stop()


def open_trial():
    import optuna

    from ptrain.experiments.tune_study import make_pruner, open_storage

    study = optuna.load_study(
        study_name=os.environ[STUDY_ENV],
        storage=open_storage(os.environ[STORAGE_ENV]),
        pruner=make_pruner(*json.loads(os.environ[PRUNER_ENV])),
    )
    return optuna.trial.Trial(study, int(os.environ[TRIAL_ENV]))
