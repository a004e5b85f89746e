"""train.lr_schedule and train.optimizer: each schedule's learning rate step by step (transformers' function, as the
HF Trainer side of the bench builds it, and the expected shape), each optimizer training configs/tiny.yaml through
the CLI, killed runs under a non-default schedule and optimizer resuming bitwise, and keys that do not apply refused
in one line by `ptrain check`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, get_scheduler
from transformers.optimization import Adafactor

from ptrain.bench.hf_trainer import hf_schedule, training_arguments
from ptrain.config import Config, TrainConfig
from ptrain.errors import ConfigError
from ptrain.runtime.engine import Engine, check_supported
from ptrain.training.optim import build_optimizer, build_scheduler, plan_steps
from tests.conftest import CONFIGS, run_cli, tiny_overrides
from tests.test_resume import assert_same_run

WARMUP, TOTAL = 4, 24  # optimizer steps


def learning_rates(scheduler, optimizer, steps: int = TOTAL) -> list[float]:
    """The learning rate of each step 0..steps (the last: after the run's final step)."""
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def ptrain_curve(**settings) -> list[float]:
    train = TrainConfig(learning_rate=1.0, epochs=1, warmup_steps=WARMUP, **settings)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return learning_rates(build_scheduler(optimizer, plan_steps(TOTAL, train), train), optimizer)


def hf_trainer_curve(**settings) -> list[float]:
    """The HF Trainer's schedule for the same settings: transformers.get_scheduler as the Trainer calls it."""
    arguments = hf_schedule(TrainConfig(learning_rate=1.0, **settings), {"max_steps": TOTAL, "warmup_steps": WARMUP})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    kwargs = arguments.get("lr_scheduler_kwargs")
    scheduler = get_scheduler(
        arguments["lr_scheduler_type"], optimizer, WARMUP, TOTAL, scheduler_specific_kwargs=kwargs
    )
    return learning_rates(scheduler, optimizer)


SCHEDULES = {
    "linear": {},
    "cosine": {"lr_schedule": "cosine", "min_lr_ratio": 0.1},
    "constant": {"lr_schedule": "constant"},
    "wsd": {"lr_schedule": "wsd", "min_lr_ratio": 0.05, "wsd_decay_ratio": 0.25},
    "polynomial": {"lr_schedule": "polynomial", "min_lr_ratio": 0.2, "poly_power": 2.0},
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_each_schedule_is_transformers_own_as_the_hf_trainer_builds_it(name):
    assert ptrain_curve(**SCHEDULES[name]) == hf_trainer_curve(**SCHEDULES[name])


def test_each_schedule_has_its_shape():
    warmup = [0.0, 0.25, 0.5, 0.75, 1.0]
    linear = ptrain_curve()
    assert linear[: WARMUP + 1] == pytest.approx(warmup) and linear[-1] == 0.0
    assert linear == ptrain_curve(lr_schedule="linear")  # the default

    cosine = ptrain_curve(**SCHEDULES["cosine"])
    assert cosine[: WARMUP + 1] == pytest.approx(warmup)
    middle = (WARMUP + TOTAL) // 2  # half-way through the decay: half-way between peak and floor
    assert cosine[middle] == pytest.approx(0.55) and cosine[-1] == pytest.approx(0.1)
    assert all(a >= b >= 0.1 - 1e-12 for a, b in zip(cosine[WARMUP:], cosine[WARMUP + 1 :]))

    assert ptrain_curve(lr_schedule="constant") == pytest.approx(warmup + [1.0] * (TOTAL - WARMUP))

    wsd = ptrain_curve(**SCHEDULES["wsd"])  # 5 decay steps: a quarter of the 20 after warmup
    assert wsd[0] == pytest.approx(0.05)  # transformers' wsd warms up from its floor
    assert wsd[WARMUP : TOTAL - 5 + 1] == [1.0] * (TOTAL - 5 - WARMUP + 1)
    assert 0.05 < wsd[TOTAL - 2] < wsd[TOTAL - 4] < 1.0 and wsd[-1] == pytest.approx(0.05)

    polynomial = ptrain_curve(**SCHEDULES["polynomial"])
    expected = [0.8 * (1 - (step - WARMUP) / (TOTAL - WARMUP)) ** 2 + 0.2 for step in range(WARMUP, TOTAL + 1)]
    assert polynomial[WARMUP:] == pytest.approx(expected)


def test_each_group_keeps_its_ratio_to_the_schedule():
    """With a head learning rate, every schedule scales each group's own rate (polynomial's absolute lr_end too)."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    for settings in SCHEDULES.values():
        train = TrainConfig(learning_rate=1e-3, head_learning_rate=4e-3, epochs=1, warmup_steps=WARMUP, **settings)
        optimizer = build_optimizer(model, train)
        scheduler = build_scheduler(optimizer, plan_steps(TOTAL, train), train)
        for _ in range(WARMUP + 3):
            optimizer.step()
            scheduler.step()
        rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
        assert rates["head"] == pytest.approx(4 * rates["layer_0"]), settings  # the top (only) layer


@pytest.mark.parametrize(
    "settings, kind",
    [({}, torch.optim.AdamW), ({"optimizer": "sgd", "sgd_nesterov": True}, torch.optim.SGD)]
    + [({"optimizer": "adafactor"}, Adafactor)],
)
def test_each_optimizer_moves_the_weights_at_the_scheduled_rate(settings, kind):
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    optimizer = build_optimizer(model, TrainConfig(learning_rate=1e-2, **settings))
    assert type(optimizer) is kind
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    model(input_ids=torch.tensor([[1, 5, 7, 2]]), labels=torch.tensor([1])).loss.backward()
    optimizer.step()
    assert all(not torch.equal(before[name], param) for name, param in model.named_parameters() if param.grad.any())


def metrics_lines(run_dir: Path) -> dict[str, dict[int, float]]:
    """RUN/metrics.jsonl as {tag: {step: the last value logged at that step}}."""
    history: dict[str, dict[int, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for tag, value in record.items():
            if tag not in ("step", "time"):
                history.setdefault(tag, {})[record["step"]] = value
    return history


# 160 rows, batch 32: 5 optimizer steps per epoch, 10 in all; a checkpoint every 2
RESUME_SETTINGS = {
    "train.epochs": "2",
    "train.warmup_ratio": "0.2",
    "train.checkpoint_every_steps": "2",
    "train.log_every_steps": "1",
    "train.eval_every_steps": "5",
    "data.max_eval_rows": "64",
    "train.callbacks": "[tests/kill_at_step.py:KillAtStep]",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [
        {
            "train.lr_schedule": "cosine",
            "train.min_lr_ratio": "0.1",
            "train.optimizer": "sgd",
            "train.learning_rate": "0.05",
        },
        {"train.lr_schedule": "wsd", "train.wsd_decay_ratio": "0.5", "train.optimizer": "adafactor"},
    ],
    ids=["cosine-sgd", "wsd-adafactor"],
)
def test_a_killed_run_resumes_to_the_uninterrupted_weights_and_rates(settings, cache_dir, tmp_path):
    def args(out: Path) -> list[str]:
        overrides = tiny_overrides(out, cache_dir, rows=160, **RESUME_SETTINGS, **settings)
        return ["train", str(CONFIGS / "tiny.yaml"), *overrides]

    reference = run_cli(*args(tmp_path / "uninterrupted"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = run_cli(*args(tmp_path / "resumed"), env={"PTRAIN_TEST_KILL_AT_STEP": "5"})  # after step 4's checkpoint
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli(*args(tmp_path / "resumed"), "train.resume=auto")
    assert resumed.returncode == 0 and "ptrain: resumed from" in resumed.stdout, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "resumed", tmp_path / "uninterrupted")
    (run_dir,) = (tmp_path / "resumed" / "runs" / "tiny").iterdir()
    (reference_dir,) = (tmp_path / "uninterrupted" / "runs" / "tiny").iterdir()
    rates, expected = metrics_lines(run_dir), metrics_lines(reference_dir)
    assert rates["train/learning_rate"] == expected["train/learning_rate"]
    assert sorted(expected["train/learning_rate"]) == list(range(1, 11))
    assert all(math.isfinite(loss) for loss in expected["train/loss"].values())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.sgd_momentum=0.5"], "train.sgd_momentum is read only with train.optimizer=sgd"),
        (["train.optimizer=sgd", "train.adam_beta2=0.98"], "train.adam_beta2 is read only with train.optimizer=adamw"),
        (["train.min_lr_ratio=0.1"], "train.min_lr_ratio is read only with train.lr_schedule=cosine or wsd or"),
        (["train.lr_schedule=cosine", "train.poly_power=2"], "train.poly_power is read only with"),
        (["train.optimizer=sgd", "train.sgd_momentum=0", "train.sgd_nesterov=true"], "train.sgd_nesterov needs"),
        (["train.lr_schedule=step"], "train.lr_schedule"),
    ],
)
def test_keys_that_do_not_apply_are_refused_in_one_line(overrides, message, tmp_path):
    result = run_cli("check", str(CONFIGS / "tiny.yaml"), f"output_dir={tmp_path}", *overrides)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"optimizer": "sgd", "sgd_momentum": 0.8, "sgd_nesterov": True}, (torch.optim.SGD, {"momentum": 0.8})),
        ({"optimizer": "adafactor"}, (Adafactor, {"relative_step": False, "scale_parameter": False})),
    ],
)
def test_the_hf_trainer_side_of_the_bench_gets_the_same_optimizer(settings, expected, tmp_path):
    from transformers import Trainer

    cfg = Config(name="tiny", data={}, model={}, train={"mixed_precision": "no", **settings})
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(training_arguments(cfg, tmp_path))
    assert optimizer_class is expected[0] and expected[1].items() <= kwargs.items()
    assert kwargs.get("nesterov", False) == cfg.train.sgd_nesterov


def test_engines_that_cannot_step_an_optimizer_refuse_it_in_one_line():
    sgd = Config(name="tiny", data={}, model={}, train={"optimizer": "sgd"})
    adafactor = Config(name="tiny", data={}, model={}, train={"optimizer": "adafactor"})
    for stage in (2, 3):
        with pytest.raises(ConfigError, match=r"^train.optimizer=sgd under DeepSpeed: .*set train.optimizer=adamw"):
            check_supported(sgd, Engine("deepspeed", 2, zero_stage=stage))
    with pytest.raises(ConfigError, match=r"^train.optimizer=adafactor under FSDP: "):
        check_supported(adafactor, Engine("fsdp2", 2))
    check_supported(sgd, Engine("fsdp2", 2))  # elementwise: runs on sharded parameters
    check_supported(adafactor, Engine("ddp", 2))
