"""LoRA for causal LMs (model.lora with task causal_lm) through the real CLI on configs/tiny_causal_lm.yaml: only the
adapters train (lm_head, tied to the embeddings, stays frozen), final/ is a merged plain model that
pipeline("text-generation") loads and that computes the LoRA model's logits, adapter/ loads in peft; the default
targets for GPT-2 and Llama; gradient checkpointing under LoRA; FSDP2's merged export keeps the embeddings tied; the
export keeps the tokenizer's chat template; model.lora.quantize refused in one line where bitsandbytes or CUDA is
missing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, pipeline

from ptrain.config import LoraSettings
from ptrain.model.loading import enable_gradient_checkpointing
from ptrain.model.lora import PROJECTIONS, add_lora, plain_model
from tests.conftest import CONFIGS, accelerate_launch, run_cli, scalar_values

CAUSAL = CONFIGS / "tiny_causal_lm.yaml"
GPT2_TARGETS = ("c_attn", "c_proj", "c_fc")
TINY_LLAMA = "{model_type: llama, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}"


def causal_args(out: Path, cache: Path, *extra: str) -> list[str]:
    return [str(CAUSAL), f"output_dir={out / 'runs'}", f"data.cache_dir={cache}", *extra]


def run_dir_of(out: Path) -> Path:
    (run_dir,) = (out / "runs").glob("*/*")
    return run_dir


@pytest.fixture(scope="module")
def base(tmp_path_factory, cache_dir) -> Path:
    """A short full fine-tuning of the tiny GPT-2 (with its trained tokenizer): the pretrained model LoRA adapts."""
    out = tmp_path_factory.mktemp("causal_base")
    result = run_cli("train", *causal_args(out, cache_dir, "train.max_steps=4", "train.eval_every_steps=4"))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir_of(out) / "final"


def pretrained(base: Path) -> list[str]:
    return ["model.scratch_config=null", "model.train_tokenizer=null", f"model.name_or_path={base}"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, cache_dir, base) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("causal_lora")
    settings = ["model.lora=true", "train.learning_rate=0.01", "train.epochs=2", "train.gradient_checkpointing=true"]
    result = run_cli("train", *causal_args(out, cache_dir, *pretrained(base), *settings))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir_of(out), result.stdout


@pytest.mark.slow
def test_only_the_adapters_train_and_final_is_the_merged_model(lora_run, base):
    run_dir, stdout = lora_run
    assert "trainable parameters" in stdout
    losses = scalar_values(run_dir, "eval/loss")
    assert losses[-1] < losses[0]
    initial, final = load_file(base / "model.safetensors"), load_file(run_dir / "final" / "model.safetensors")
    assert final.keys() == initial.keys()  # a plain GPT-2: no lora_, base_layer or modules_to_save keys
    for key, weight in initial.items():
        adapted = key.endswith(tuple(f".{name}.weight" for name in GPT2_TARGETS))
        assert torch.equal(final[key], weight) != adapted, key  # embeddings, lm_head, norms and biases stay
    adapter = run_dir / "adapter"
    settings = json.loads((adapter / "adapter_config.json").read_text())
    assert (set(settings["target_modules"]), settings["modules_to_save"], settings["task_type"]) == (
        set(GPT2_TARGETS),
        None,
        "CAUSAL_LM",
    )
    saved = load_file(adapter / "adapter_model.safetensors")
    assert saved and all("lora_A" in key or "lora_B" in key for key in saved)  # no vocab-sized lm_head copy


@pytest.mark.slow
def test_pipeline_loads_final_and_merged_logits_match_base_plus_adapter(lora_run, base):
    run_dir, _ = lora_run
    from peft import PeftModel

    generate = pipeline("text-generation", model=str(run_dir / "final"))
    text = generate("ROMEO:", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    inputs = tokenizer("ROMEO: What light through yonder window breaks", return_tensors="pt")
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "final").eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run_dir / "adapter").eval()
    with torch.no_grad():
        reference = adapted(input_ids=inputs["input_ids"]).logits
        torch.testing.assert_close(merged(input_ids=inputs["input_ids"]).logits, reference, atol=1e-5, rtol=1e-4)
        plain = AutoModelForCausalLM.from_pretrained(base).eval()(input_ids=inputs["input_ids"]).logits
    assert not torch.allclose(plain, reference, atol=1e-3)  # the adapters changed the model


@pytest.mark.slow
def test_scratch_llama_gets_every_projection_and_trains_with_gradient_checkpointing(tmp_path, cache_dir):
    settings = ["model.lora=true", f"model.scratch_config={TINY_LLAMA}", "train.gradient_checkpointing=true"]
    result = run_cli("train", *causal_args(tmp_path, cache_dir, *settings, "train.max_steps=6"))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = run_dir_of(tmp_path)
    settings = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert set(settings["target_modules"]) == set(PROJECTIONS) and settings["modules_to_save"] is None
    final = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    assert final.config.model_type == "llama" and final.config.vocab_size == len(tokenizer) == 500


@pytest.mark.slow
@pytest.mark.multiprocess
def test_lora_under_fsdp_exports_a_merged_causal_lm_with_its_embeddings_still_tied(tmp_path, cache_dir):
    """Two processes, FSDP2 on gloo (tests/gpu_launch.py): the export gathers the sharded weights onto a twin, which
    must share lm_head with the input embeddings again, or the merge unties them and stores the vocabulary twice."""
    launch_args = ["--config_file", str(CONFIGS / "accelerate" / "fsdp.yaml"), "--num_processes", "2"]
    args = causal_args(tmp_path, cache_dir, "model.lora=true", "train.max_steps=6", "train.mixed_precision=no")
    result = accelerate_launch(launch_args, "tests.gpu_launch", "train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = run_dir_of(tmp_path)
    final = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert final.config.tie_word_embeddings and "lm_head.weight" not in load_file(
        run_dir / "final" / "model.safetensors"
    )
    assert final.lm_head.weight is final.transformer.wte.weight
    saved = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert saved and all("lora_A" in key or "lora_B" in key for key in saved)
    generate = pipeline("text-generation", model=str(run_dir / "final"))
    assert generate("ROMEO:", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("ROMEO:")


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return LlamaForCausalLM(config)


def lora_llama():
    """tiny_llama with LoRA adapters whose B matrices are random (peft starts them at zero: no gradient for A)."""
    model = add_lora(tiny_llama(), LoraSettings(dropout=0.0), "CAUSAL_LM")
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    return model


def loss_and_grads(model) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def test_causal_lm_lora_defaults_freeze_lm_head_and_checkpointing_gives_the_same_gradients():
    model = lora_llama()
    trained = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trained and all("lora_A" in name or "lora_B" in name for name in trained)  # no lm_head, no embeddings
    adapted = {name.split(".")[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert adapted == set(PROJECTIONS)
    checkpointed = copy.deepcopy(model)
    enable_gradient_checkpointing(plain_model(checkpointed))
    assert plain_model(checkpointed).is_gradient_checkpointing
    (loss, grads), (loss_checkpointed, grads_checkpointed) = loss_and_grads(model), loss_and_grads(checkpointed)
    torch.testing.assert_close(loss_checkpointed, loss)
    assert grads.keys() == grads_checkpointed.keys() == trained
    for name, grad in grads.items():
        torch.testing.assert_close(grads_checkpointed[name], grad)
    classifier = add_lora(tiny_llama_classifier(), LoraSettings(), "SEQ_CLS")  # classification keeps peft's defaults
    assert classifier.peft_config["default"].target_modules == {"q_proj", "v_proj"}
    assert classifier.peft_config["default"].modules_to_save[0] == "score"


def tiny_llama_classifier():
    from transformers import LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, pad_token_id=0
    )
    return LlamaForSequenceClassification(config)


def test_export_keeps_the_tokenizer_chat_template(tmp_path, accelerator, base):
    from ptrain.outputs.export import export_model

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    model = add_lora(AutoModelForCausalLM.from_pretrained(base), LoraSettings(), "CAUSAL_LM")
    export_model(accelerator, model, tokenizer, tmp_path / "final", tmp_path / "adapter")
    for folder in ("final", "adapter"):
        saved = AutoTokenizer.from_pretrained(tmp_path / folder)
        assert saved.chat_template == tokenizer.chat_template, folder
    messages = [{"role": "user", "content": "hi"}]
    assert AutoTokenizer.from_pretrained(tmp_path / "final").apply_chat_template(messages, tokenize=False) == (
        "<|user|>hi\n"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_quantize_is_refused_in_one_line_before_any_work(tmp_path, cache_dir, base):
    args = causal_args(tmp_path, cache_dir, *pretrained(base), "model.lora.quantize=4bit")
    result = run_cli("train", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ptrain: error: {CAUSAL}: model.lora.quantize=4bit needs bitsandbytes and a CUDA device; this run is on "
        "cpu; remove model.lora.quantize or run on a GPU with bitsandbytes installed (pip install bitsandbytes)"
    ]
    assert not (tmp_path / "runs").exists()  # refused before a run folder, model or data
    scratch = run_cli("check", str(CAUSAL), "model.lora.quantize=8bit")
    assert scratch.returncode == 2
    assert "model.lora.quantize=8bit quantizes pretrained weights as they load; a scratch_config" in scratch.stderr
