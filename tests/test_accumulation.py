"""Gradient accumulation through ptrain's windows (training/window.py): 4 micro-batches of 2 give the gradient of one
batch of 8, the same as PyTorch's (weighted) mean cross entropy over those 8 examples."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForSequenceClassification

from ptrain.tasks.loss import ClassificationLoss
from ptrain.training.window import micro_step, window_scale, windows

SEQUENCES = [
    [101, 7, 8, 9, 102],
    [101, 5, 102],
    [101, 4, 4, 4, 4, 4, 102],
    [101, 9, 102],
    [101, 3, 3, 102],
    [101, 6, 7, 102],
    [101, 2, 3, 4, 5, 6, 7, 8, 102],
    [101, 8, 102],
]
LABELS = [0, 1, 2, 0, 1, 2, 1, 1]


def tiny_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=128,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def collate(rows):
    longest = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([ids + [0] * (longest - len(ids)) for ids, _ in rows])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([y for _, y in rows])}


def ptrain_gradients(accumulation: int, batch_size: int, weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """One optimizer window the way ptrain's loop runs it: the window read first, each summed loss scaled by the
    window's targets before its backward."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = Accelerator(gradient_accumulation_steps=accumulation, cpu=True)
    loader = DataLoader(list(zip(SEQUENCES, LABELS)), batch_size=batch_size, collate_fn=collate)
    model, loader = accelerator.prepare(tiny_model(), loader)
    loss_fn = ClassificationLoss(class_weights=weights)
    (window,) = windows(loader, accumulation)  # 8 rows: one window of `accumulation` micro-batches or fewer
    scale = window_scale(accelerator, loss_fn, window)
    assert scale.targets == (8 if weights is None else weights[torch.tensor(LABELS)].sum())
    for position, batch in enumerate(window):
        with micro_step(accelerator, model, last=position == len(window) - 1):
            labels = batch.pop("labels")
            accelerator.backward(loss_fn(model(**batch).logits, labels) * scale.factor)
    assert accelerator.sync_gradients  # the last micro-batch synchronised: the optimizer may step
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def reference_gradients(weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
    model = tiny_model()
    batch = collate(list(zip(SEQUENCES, LABELS)))
    labels = batch.pop("labels")
    F.cross_entropy(model(**batch).logits, labels, weight=weights).backward()
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
@pytest.mark.parametrize("weights", [None, torch.tensor([0.5, 1.0, 3.0])], ids=["unweighted", "class_weights"])
def test_four_micro_batches_of_two_equal_one_batch_of_eight(weights):
    expected = reference_gradients(weights)
    for accumulation, batch_size in [(4, 2), (1, 8), (3, 3)]:  # (3, 3): a short last micro-batch
        grads = ptrain_gradients(accumulation, batch_size, weights)
        assert grads.keys() == expected.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected[name], atol=1e-6, rtol=1e-4, msg=name)


def test_label_smoothing_matches_pytorch_mean_over_the_window():
    logits, labels = torch.randn(8, 3), torch.tensor(LABELS)
    loss_fn = ClassificationLoss(label_smoothing=0.1, class_weights=torch.tensor([0.5, 1.0, 3.0]))
    expected = F.cross_entropy(logits, labels, weight=torch.tensor([0.5, 1.0, 3.0]), label_smoothing=0.1)
    torch.testing.assert_close(loss_fn(logits, labels) / loss_fn.target_weight(labels), expected)
