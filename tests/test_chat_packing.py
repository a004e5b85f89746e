"""Padding-free packing: several conversations in one row, position_ids restarting at each, no attention mask. The
packed batch gives each example the loss and the model the gradients it gets from the examples run one by one (to
float tolerance), for Llama and GPT-2 under SDPA and eager attention; and the packer fills rows it never overfills."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ptrain.data.collate import PositionsCollator, pop_token_mask
from ptrain.tasks.loss import IGNORE_INDEX, TokenLoss
from ptrain.tasks.packing import pack_examples, packed_rows

SHAPES = {
    "llama": dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
    ),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
}
VOCAB, PAD = 97, 0


def examples(lengths: list[int], seed: int = 0) -> dict:
    """Random conversations: ids, labels -100 on a random prompt part and on the first token, as chat_encoding makes."""
    rng = random.Random(seed)
    rows = {"input_ids": [], "labels": [], "idx": list(range(len(lengths)))}
    for length in lengths:
        ids = [rng.randrange(1, VOCAB) for _ in range(length)]
        prompt = rng.randrange(1, length)
        rows["input_ids"].append(ids)
        rows["labels"].append([IGNORE_INDEX] * prompt + ids[prompt:])
    return rows


def model_of(family: str, attention: str):
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, vocab_size=VOCAB, **SHAPES[family])
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


def loss_and_grads(model, batch: dict, per_token: bool):
    """Summed loss of the batch (its gradients, flat) and, per_token, every target's loss in order."""
    model.zero_grad()
    labels, _, _ = batch.pop("labels"), batch.pop("idx"), pop_token_mask(batch)
    logits = model(**batch).logits.float()
    loss = TokenLoss(shift=True)(logits, labels)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    targets = labels[:, 1:]
    token_losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets, reduction="none", ignore_index=IGNORE_INDEX
    )[targets != IGNORE_INDEX]
    return loss.detach(), grads, token_losses.detach() if per_token else None


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_batch_equals_its_examples_one_by_one(family, attention):
    model = model_of(family, attention)
    data = examples([23, 9, 31, 14, 5, 17])
    packed = packed_rows(data, capacity=48)
    assert max(packed["examples"]) > 1  # rows do hold several examples
    rows = [
        {k: packed[k][i] for k in ("input_ids", "labels", "position_ids", "idx")} for i in range(len(packed["idx"]))
    ]
    batch = PositionsCollator(PAD)(rows)  # rows padded to the longest: padding is one more example, unlabelled
    assert "attention_mask" not in batch
    packed_loss, packed_grads, packed_tokens = loss_and_grads(model, batch, per_token=True)

    alone_loss, alone_grads, per_example = torch.zeros(()), None, {}
    for i in range(len(data["idx"])):
        one = PositionsCollator(PAD)(
            [
                {
                    **{k: data[k][i] for k in ("input_ids", "labels", "idx")},
                    "position_ids": list(range(len(data["input_ids"][i]))),
                }
            ]
        )
        loss, grads, tokens = loss_and_grads(model, one, per_token=True)
        alone_loss += loss
        alone_grads = grads if alone_grads is None else alone_grads + grads
        per_example[i] = tokens
    # each example's target losses, in the packed rows' order of examples
    order = [i for members in pack_examples([len(ids) for ids in data["input_ids"]], 48) for i in members]
    expected = torch.cat([per_example[i] for i in order])
    torch.testing.assert_close(packed_tokens, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed_loss, alone_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed_grads, alone_grads, rtol=1e-4, atol=1e-6)


def test_without_restarting_positions_the_examples_would_see_each_other():
    """The control: the same packed rows with positions running on (attention across examples) give other losses,
    so the equality above is the position_ids' doing."""
    model = model_of("llama", "sdpa")
    data = examples([23, 9, 31, 14, 5, 17])
    packed = packed_rows(data, capacity=48)
    rows = [{k: packed[k][i] for k in ("input_ids", "labels", "idx")} for i in range(len(packed["idx"]))]
    restarting = PositionsCollator(PAD)([{**r, "position_ids": p} for r, p in zip(rows, packed["position_ids"])])
    running = PositionsCollator(PAD)([{**r, "position_ids": list(range(len(r["input_ids"])))} for r in rows])
    assert not torch.allclose(loss_and_grads(model, restarting, False)[0], loss_and_grads(model, running, False)[0])


def test_best_fit_decreasing_fills_rows_and_never_overfills_one():
    rng = random.Random(1)
    lengths = [rng.randint(10, 200) for _ in range(3000)]
    rows = pack_examples(lengths, 256)
    assert sorted(i for row in rows for i in row) == list(range(3000))  # every example once
    assert all(sum(lengths[i] for i in row) <= 256 for row in rows)
    assert sum(lengths) / (256 * len(rows)) > 0.97  # under 3% of the slots left empty
    assert rows == pack_examples(lengths, 256)  # deterministic
    packed = packed_rows(examples([30, 40, 50]), capacity=64)
    for ids, positions, labels in zip(packed["input_ids"], packed["position_ids"], packed["labels"]):
        assert len(ids) == len(positions) == len(labels) <= 64
        starts = [p for p, position in enumerate(positions) if position == 0]
        assert all(labels[s] == IGNORE_INDEX for s in starts)  # no example's first token is a target
