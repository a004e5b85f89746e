"""A [CLS]-only last encoder layer for heads that read the first token only: exact, and a sixth less work.

BERT-family sequence-classification heads (the pooler, or RoBERTa's and ELECTRA's head) read the last layer's
first position and nothing else. In that layer every position still needs its keys and values, but only the
first position's query, attention output, feed-forward and LayerNorms reach the loss; the other rows' work
changes nothing. The patched layer computes keys and values for all rows and the rest for row 0 only, so the
encoder's output has length 1 and the logits, loss and gradients are those of the full layer.

Private internals: a copy of transformers' BertLayer.forward (RoBERTa's, XLM-R's, CamemBERT's and ELECTRA's layers
are the same code) set as the last layer's instance-level `forward`, the model file's own eager_attention_forward
and the ALL_ATTENTION_FUNCTIONS registry. Gates (gates.py): any device (it only skips rows, in any kernel); the
families in FIRST_TOKEN_HEADS with that head class; attention "sdpa" or "eager" (or ptrain's "ptrain_sdpa");
transformers in gates.TESTED.
"""

from __future__ import annotations

import sys
import types

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Heads whose logits depend on the last hidden state's first position only, by model family (config.model_type).
FIRST_TOKEN_HEADS = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "xlm-roberta": "XLMRobertaForSequenceClassification",
    "camembert": "CamembertForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
}
FAMILIES = frozenset(FIRST_TOKEN_HEADS)
ATTENTION = ("sdpa", "eager", "ptrain_sdpa")  # tested; flash-attention kernels take other mask layouts


def unsupported(model: torch.nn.Module) -> str | None:
    """Why the model's last layer cannot be patched (another head, a decoder layer, chunked feed-forward, an
    untested attention kernel), or None."""
    if type(model).__name__ not in FIRST_TOKEN_HEADS.values():
        return f"{type(model).__name__} reads more than the first position"
    if getattr(model.config, "_attn_implementation", None) not in ATTENTION:
        return f"attention {model.config._attn_implementation} not among those tested ({', '.join(ATTENTION)})"
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not layers:
        return "no encoder layers"
    layer = layers[-1]
    plain_layer = not getattr(layer, "is_decoder", True) and getattr(layer, "chunk_size_feed_forward", 1) == 0
    if not plain_layer or not hasattr(getattr(layer.attention, "self", None), "query"):
        return "the last layer is not an encoder layer of the tested shape"
    return None


def first_token_last_layer(model: torch.nn.Module) -> None:
    """Patch the last encoder layer of a model `unsupported` accepts (instance-level forward: weights and state
    dict unchanged, the export is the plain model)."""
    layer = model.base_model.encoder.layer[-1]
    layer.forward = types.MethodType(first_token_forward, layer)


def first_token_forward(self, hidden_states, attention_mask=None, *args, **kwargs) -> torch.Tensor:
    """BertLayer.forward with the query, attention output and feed-forward of position 0 only."""
    attention = self.attention.self
    batch, length, _ = hidden_states.shape
    first, size = hidden_states[:, :1], attention.attention_head_size
    query = attention.query(first).view(batch, 1, -1, size).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[..., :1, :]  # the first query's row of a per-query mask
    eager = sys.modules[type(attention).__module__].eager_attention_forward  # the model file's own
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)
    context, _ = interface(
        attention,
        query,
        key,
        value,
        attention_mask,
        dropout=attention.dropout.p if attention.training else 0.0,
        scaling=attention.scaling,
    )
    attention_output = self.attention.output(context.reshape(batch, 1, -1).contiguous(), first)
    return self.output(self.intermediate(attention_output), attention_output)
