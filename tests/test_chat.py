"""`ptrain train` on chat configs through the CLI: instruction rows and DailyDialog dialogues become conversations,
the start line counts conversations, rows and what the policies cut or dropped, each evaluation scores the assistant
tokens and records the model's answers, and the export answers a list of messages in pipeline()."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CONFIGS, DATA_DIR, run_cli, tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.end_to_end]


def chat_overrides(tmp_path, cache_dir, **extra: str) -> list[str]:
    return tiny_overrides(tmp_path, cache_dir, rows=200, **{"data.max_eval_rows": "24", **extra})


def train_chat(tmp_path, cache_dir, *overrides: str) -> str:
    """`ptrain train configs/tiny_chat.yaml` with `overrides`; its start line about the conversations."""
    result = run_cli("train", str(CONFIGS / "tiny_chat.yaml"), *chat_overrides(tmp_path, cache_dir), *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return next(line for line in result.stdout.splitlines() if line.startswith("ptrain: chat:"))


def metrics_lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_instructions_train_on_the_answers_and_the_export_chats_in_pipeline(tmp_path, cache_dir):
    line = train_chat(tmp_path, cache_dir)
    assert "train 200 conversations in " in line and "bad rows: drop, too long: drop_turns" in line
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    lines = metrics_lines(run_dir)
    losses = [entry["eval/loss"] for entry in lines if "eval/loss" in entry]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # the loss on assistant tokens falls
    samples = [entry["eval/samples"] for entry in lines if "eval/samples" in entry][-1]
    assert len(samples) == 2
    for sample in samples:  # rendered by the template, up to its generation prompt; the reference is the answer
        assert sample["prompt"].startswith("<|im_start|>system\n") and sample["prompt"].endswith(
            "<|im_start|>assistant\n"
        )
        assert sample["reference"] and isinstance(sample["answer"], str)
    from transformers import pipeline

    chat = pipeline("text-generation", model=str(run_dir / "final"))
    out = chat([{"role": "user", "content": "Name a color."}], max_new_tokens=5, do_sample=False)
    assert out[0]["generated_text"][-1]["role"] == "assistant"


def test_bad_and_long_conversations_follow_the_policy_and_are_counted(tmp_path, cache_dir):
    good = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there."}]
    rows = [good] * 30 + [
        [{"role": "user", "content": "Hello?"}],  # no assistant turn
        [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "  "}],  # an empty answer
        [{"role": "narrator", "content": "Once"}, {"role": "assistant", "content": "upon"}],  # an unknown role
        [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "Too late."}],  # too long
        good + [{"role": "user", "content": "More? " * 200}, {"role": "assistant", "content": "No."}],  # cut
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))
    overrides = [
        f"data.train_file={data}",
        f"data.validation_file={data}",
        "data.format=jsonl",
        "chat.roles=null",
        "chat.system_prompt=null",
        "train.epochs=1",
    ]
    line = train_chat(tmp_path, cache_dir, *overrides)
    for counted in (
        "train 31 conversations",
        "1 no assistant turn",
        "1 an empty assistant turn",
        "1 too long",
        "1 a role other than system, user, assistant",
        "1 cut to the turns that fit",
    ):
        assert counted in line, (counted, line)
    refused = run_cli(
        "train",
        str(CONFIGS / "tiny_chat.yaml"),
        *chat_overrides(tmp_path, cache_dir),
        *overrides,
        "chat.bad_rows=error",
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (
        f"{data}" in refused.stderr
        and "(first: data row 30)" in refused.stderr
        and "chat.bad_rows=drop" in refused.stderr
    )


def test_dailydialog_speakers_become_user_and_assistant(tmp_path, cache_dir):
    overrides = [
        f"data.train_file={DATA_DIR / 'chat' / 'dialogues_train.txt'}",
        f"data.validation_file={DATA_DIR / 'chat' / 'dialogues_validation.txt'}",
        "data.format=dialogues",
        "chat.roles=null",
        "chat.speakers=[user,assistant]",
        "chat.system_prompt=null",
        "chat.template=llama3",
        "data.max_train_rows=60",
        "train.epochs=1",
    ]
    line = train_chat(tmp_path, cache_dir, *overrides)
    assert "train 60 conversations in " in line and " cut to the turns that fit" in line  # 256 tokens: long ones cut
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    samples = [entry["eval/samples"] for entry in metrics_lines(run_dir) if "eval/samples" in entry][-1]
    first = "Good morning , sir . Is there a bank near here ?"  # the first validation dialogue's first turn
    assert samples[0]["prompt"] == (
        f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{first}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert samples[0]["reference"] == "There is one . 5 blocks away from here ?"


def test_chat_config_mistakes_are_one_line(tmp_path, cache_dir):
    both = run_cli("check", str(CONFIGS / "tiny_chat.yaml"), "chat.speakers=[user,assistant]")
    assert both.returncode == 2 and "chat.roles and chat.speakers both set" in both.stderr
    role = run_cli("check", str(CONFIGS / "tiny_chat.yaml"), "chat.roles={user: [instruction], bot: [output]}")
    assert role.returncode == 2 and "chat role 'bot' is not system, user or assistant" in role.stderr
    no_template = run_cli(
        "train", str(CONFIGS / "tiny_chat.yaml"), *chat_overrides(tmp_path, cache_dir), "chat.template=null"
    )
    assert no_template.returncode == 2 and "the tokenizer has no chat template; set chat.template" in no_template.stderr
