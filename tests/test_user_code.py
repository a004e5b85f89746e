"""The user's own code named in a config: train.loss, train.metrics, train.callbacks and model.builder, through
the real CLI on the tiny model, and the one-line refusals of `ptrain check`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from ptrain.errors import ConfigError, ModelError
from ptrain.model.loading import build_model
from ptrain.runtime.precision import resolve_config_precision
from ptrain.tasks import load_config
from ptrain.training.checkpointing.resume import check_same_config
from tests.conftest import CONFIGS, run_cli, scalar_values, tiny_overrides, train_tiny


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


@pytest.mark.slow
def test_the_shipped_focal_loss_metric_and_callback_train_tiny_and_the_run_keeps_its_code(tmp_path, cache_dir):
    config = CONFIGS / "tiny_user_code.yaml"
    extra = {"train.epochs": "1", "train.eval_every_steps": "3", "train.metric_for_best": "balanced_accuracy"}
    run_dir = train_tiny(tmp_path, cache_dir, config=config, **extra)
    evaluations = [json.loads(line) for line in (run_dir / "eval_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evaluations] == [3, 6, 7]  # the callback's file: one line per evaluation
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final"]["balanced_accuracy"] == evaluations[-1]["balanced_accuracy"]
    assert 0.0 <= metrics["best"]["balanced_accuracy"] <= 1.0
    for name in ("focal_loss.py", "metrics.py", "eval_log.py"):  # copies, named by the run's config.yaml
        assert (run_dir / "code" / name).read_bytes() == (CONFIGS / "user_code" / name).read_bytes()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["loss"] == "code/focal_loss.py:FocalLoss"
    assert run_cli("check", str(run_dir / "config.yaml"), cwd=tmp_path).returncode == 0  # re-runnable from there

    cfg, _ = resolve_config_precision(load_config(config, tiny_overrides(tmp_path, cache_dir, rows=200, **extra)))
    check_same_config(cfg, run_dir)  # a resume compares the user's files by content: the copy matches
    (run_dir / "code" / "focal_loss.py").write_text((CONFIGS / "user_code" / "focal_loss.py").read_text() + "\n#")
    with pytest.raises(ConfigError, match="train.loss"):
        check_same_config(cfg, run_dir)


@pytest.mark.slow
def test_a_summed_loss_of_the_user_keeps_the_window_normalisation(tmp_path, cache_dir):
    """Cross entropy summed over the batch, as the user's function, gives the default run's losses."""
    write(
        tmp_path / "ce.py",
        """
        import torch.nn.functional as F

        def summed_ce(logits, labels):
            return F.cross_entropy(logits, labels, reduction="sum")
        """,
    )
    extra = {"train.max_steps": "6", "train.log_every_steps": "2", "train.gradient_accumulation_steps": "2"}
    plain = train_tiny(tmp_path / "plain", cache_dir, **extra)
    user = train_tiny(tmp_path / "user", cache_dir, **extra, **{"train.loss": f"{tmp_path / 'ce.py'}:summed_ce"})
    for tag in ("train/loss", "eval/loss"):
        assert scalar_values(user, tag) == pytest.approx(scalar_values(plain, tag), rel=1e-6, abs=1e-6)


@pytest.mark.slow
def test_callbacks_see_every_event_and_may_save_and_stop_and_a_builder_makes_the_model(tmp_path, cache_dir):
    write(
        tmp_path / "hooks.py",
        """
        import json
        from transformers import BertConfig, BertForSequenceClassification

        class Recorder:
            def _note(self, view, event):
                if view.is_main_process:
                    with open(view.run_dir / "events.jsonl", "a") as out:
                        checkpoint = view.checkpoint.name if view.checkpoint else None
                        out.write(json.dumps([event, view.step, checkpoint, sorted(view.metrics)]) + "\\n")

            def on_train_start(self, view):
                self._note(view, "start")

            def on_step_end(self, view):
                self._note(view, "step")
                if view.step == 2:
                    view.request_save()
                if view.step == 4:
                    view.request_stop()

            def on_evaluate(self, view):
                self._note(view, "evaluate")

            def on_checkpoint(self, view):
                self._note(view, "checkpoint")

            def on_train_end(self, view):
                self._note(view, "end")

        def small_bert(cfg, label_names, tokenizer):
            config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, id2label=dict(enumerate(label_names)))
            return BertForSequenceClassification(config)
        """,
    )
    extra = {
        "train.callbacks": f"[{tmp_path / 'hooks.py'}:Recorder]",
        "model.builder": f"{tmp_path / 'hooks.py'}:small_bert",
        "train.eval_every_steps": "3",
        "train.checkpoint_at_epoch_end": "false",
    }
    run_dir = train_tiny(tmp_path, cache_dir, **extra)
    events = [tuple(json.loads(line)[:3]) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events == [
        ("start", 0, None),
        ("step", 1, None),
        ("step", 2, None),
        ("checkpoint", 2, "step-00000002"),  # asked for at step 2
        ("step", 3, None),
        ("evaluate", 3, None),
        ("step", 4, None),  # asked to stop: the final evaluation, export and metrics follow
        ("evaluate", 4, None),
        ("end", 4, None),
    ]
    assert json.loads((run_dir / "events.jsonl").read_text().splitlines()[-1])[3]  # the view carries the scores
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["optimizer_steps"] == 4 and metrics["train"]["early_stopped"]
    exported = json.loads((run_dir / "final" / "config.json").read_text())
    assert exported["hidden_size"] == 32 and exported["id2label"]["0"] == "sadness"  # the builder's model


BAD_CODE = """
def one_argument(logits):
    return logits.sum()

def needs_gold(gold_labels, predictions):
    return 0.0

class Typo:
    def on_evaluation(self, view):
        pass

def accuracy(predictions, labels):
    return 1.0
"""


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.loss=missing.py:f", r"train\.loss: \S+missing\.py does not exist"),
        ("train.loss={code}:FocalLoss", "train.loss: .*code.py defines no 'FocalLoss'"),
        ("train.loss={code}:one_argument", r"train\.loss: .* must be a function \(logits, labels\)"),
        ("train.loss=no_such_package.losses:focal", "train.loss: module 'no_such_package.losses' cannot be imported"),
        ("train.metrics=[{code}:needs_gold]", r"train\.metrics: .* must be a function of some of \(predictions"),
        ("train.metrics=[{code}:accuracy]", "'accuracy' is already a metric of sequence_classification"),
        ("train.callbacks=[{code}:Typo]", "defines on_evaluation, which is no event .did you mean on_evaluate"),
        ("model.builder={code}:Typo", r"model\.builder: .* must be a function \(cfg, label_names, tokenizer\)"),
        ("train.metric_for_best=recall", "'recall' is not a sequence_classification metric"),
    ],
)
def test_wrong_code_references_are_refused_in_one_line(tmp_path, override, expected):
    code = write(tmp_path / "code.py", BAD_CODE)
    with pytest.raises(ConfigError, match=expected) as refused:
        load_config(CONFIGS / "tiny.yaml", [override.format(code=code)])
    assert "\n" not in str(refused.value) and "tiny.yaml" in str(refused.value)


def test_ptrain_check_refuses_a_wrong_path_in_one_line():
    result = run_cli("check", str(CONFIGS / "tiny_user_code.yaml"), "train.callbacks=[user_code/nowhere.py:EvalLog]")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "train.callbacks" in result.stderr and "nowhere.py does not exist" in result.stderr


def test_a_loss_with_label_smoothing_and_a_builder_returning_no_pretrained_model_are_refused(tmp_path):
    code = write(
        tmp_path / "code.py", "import torch\n\ndef linear(cfg, names, tokenizer):\n    return torch.nn.Linear(2, 2)\n"
    )
    with pytest.raises(ConfigError, match="train.label_smoothing"):
        load_config(CONFIGS / "tiny_user_code.yaml", ["train.label_smoothing=0.1"])
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.builder={code}:linear"])
    with pytest.raises(ModelError, match="model.builder: .* returned Linear; return a transformers PreTrainedModel"):
        build_model(cfg, None, ["a", "b"], None)
