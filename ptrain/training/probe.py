"""The linear-probe recipe (`task: linear_probe`): encode every split once with the frozen encoder, cache the
pooled features by content, fit a logistic regression on the training features, score it against the
majority class, send the validation features to TensorBoard's projector, export encoder + head."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torchmetrics.functional.classification import multiclass_confusion_matrix

from ptrain.config import Config, to_yaml
from ptrain.config.sources import resolve_model_path
from ptrain.data import batching
from ptrain.data.tokenize import DEFAULT_CACHE_DIR
from ptrain.errors import ConfigError
from ptrain.fast_paths import PACKED_EVALUATION, apply_fast_paths
from ptrain.files.atomic import write_json, write_text, written_through
from ptrain.outputs.export import save_folder
from ptrain.outputs.run_dir import claim_run_dir
from ptrain.outputs.tracking import Tracker
from ptrain.runtime.distributed import build_accelerator
from ptrain.runtime.precision import resolve_config_precision
from ptrain.tasks import get_task
from ptrain.tasks.classification import label_scores
from ptrain.tasks.figures import confusion_figure
from ptrain.tasks.probe import HEAD_FILE, encode
from ptrain.training.recipe import load_data
from ptrain.training.summary import hparams_of, summary_metrics

FEATURES_VERSION = "v1"  # bump when the way features are computed changes


def train_probe(cfg: Config) -> int:
    started = time.perf_counter()
    cfg, precision = resolve_config_precision(cfg)  # the encoder runs under autocast in the resolved dtype
    accelerator = build_accelerator(cfg)
    if accelerator.num_processes > 1:
        raise ConfigError("task linear_probe runs in one process: start it with `ptrain train CONFIG`, not a launcher")
    set_seed(cfg.train.seed)
    task = get_task(cfg.task)
    tokenizer, splits = load_data(cfg, task, accelerator)
    run_dir, lock = claim_run_dir(accelerator, cfg.output_dir, cfg.name, cfg.run_dir)
    with lock:  # no other process trains in the folder until the end (or an error)
        write_text(run_dir / "config.yaml", to_yaml(cfg))
        encoder = task.load_model(cfg, splits.label_names, tokenizer).to(accelerator.device)
        apply_fast_paths(encoder, accelerator, cfg.train.fast_paths, only=(PACKED_EVALUATION,))  # features as before
        features, hits, encode_seconds = encode_splits(cfg, encoder, tokenizer, splits.tokenized, accelerator)
        if precision.warning:
            accelerator.print(f"ptrain: warning: {precision.warning}")
        accelerator.print(
            f"ptrain: precision {precision.describe()}; linear probe on {cfg.linear_probe.pooling} features of "
            f"{', '.join(f'{s} {len(f[1]):,}' for s, f in features.items())} "
            f"rows; feature cache reused for {[s for s, hit in hits.items() if hit] or 'none'}; run folder {run_dir}"
        )
        fit_started = time.perf_counter()
        weight, bias = fit_head(cfg, *features["train"], len(splits.label_names))
        fit_seconds = time.perf_counter() - fit_started
        names, majority = splits.label_names, int(torch.bincount(features["train"][1]).argmax())
        scores = {split: score(weight, bias, *features[split], majority, len(names)) for split in features}
        export_probe(cfg, encoder, tokenizer, weight, bias, names, run_dir / "final")
        tracker = Tracker(
            run_dir, True, report_to=cfg.train.report_to, experiment=cfg.name, hyperparameters=hparams_of(cfg)
        )
        track(cfg, tracker, scores, features["validation"], splits, weight, bias, names)
        wall_seconds = time.perf_counter() - started
        metrics = probe_metrics(cfg, scores, hits, {"encode": encode_seconds, "fit": fit_seconds}, wall_seconds)
        write_json(run_dir / "metrics.json", metrics)
        tracker.hparams(hparams_of(cfg), summary_metrics(metrics, task.metrics), 0)
        tracker.close()
    for split, values in scores.items():
        accelerator.print(f"ptrain: {split}: " + " | ".join(f"{k} {v:.4f}" for k, v in values.items()))
    trackers = "".join(f"ptrain: {line}\n" for line in tracker.destinations())
    accelerator.print(
        f"ptrain: wall time {metrics['train']['wall_seconds']:.0f}s (encoding {encode_seconds:.0f}s, "
        f"fit {fit_seconds:.0f}s)\n{trackers}"
        f"ptrain: model: {run_dir / 'final'} (encoder + {HEAD_FILE}); metrics: {run_dir / 'metrics.json'}"
    )
    return 0


def encode_splits(cfg: Config, encoder, tokenizer, tokenized: dict, accelerator) -> tuple[dict, dict, float]:
    """Features of every split (from the cache when there), which splits hit the cache, and the encoding seconds."""
    features, hits, encode_seconds = {}, {}, 0.0
    for split, rows in tokenized.items():
        features[split], hits[split], seconds = cached_features(cfg, encoder, tokenizer, rows, accelerator)
        encode_seconds += seconds
    return features, hits, encode_seconds


def probe_metrics(cfg: Config, scores: dict, hits: dict, seconds: dict[str, float], wall_seconds: float) -> dict:
    """metrics.json of a probe: the keys of a trained run's, with the validation scores as best and final."""
    metrics = {
        "final": {**scores["validation"], "step": 0},
        "best": {**scores["validation"], "step": 0},
        "train_final": scores["train"],
        "train": {
            "optimizer_steps": 0,
            "epochs": 0,
            "early_stopped": False,
            "nonfinite_skips": 0,
            "encode_seconds": seconds["encode"],
            "fit_seconds": seconds["fit"],
            "feature_cache_hits": hits,
            "wall_seconds": wall_seconds,
            "mixed_precision": cfg.train.mixed_precision,
        },
    }
    if "test" in scores:
        metrics["test_final"] = scores["test"]
    return metrics


def cached_features(
    cfg: Config, encoder, tokenizer, tokenized, accelerator
) -> tuple[tuple[torch.Tensor, torch.Tensor], bool, float]:
    """(features, labels) of a tokenized split, read from the feature cache or encoded and written there; the key
    is the tokenized split's fingerprint (data, tokenizer, max_length, labels), the model's weights, the pooling
    and the precision."""
    cache_dir = Path(cfg.data.cache_dir or DEFAULT_CACHE_DIR).expanduser()
    parts = [
        tokenized._fingerprint,
        model_identity(cfg),
        cfg.linear_probe.pooling,
        cfg.train.mixed_precision,
        FEATURES_VERSION,
    ]
    path = cache_dir / f"features-{hashlib.sha256(chr(31).join(parts).encode()).hexdigest()[:24]}.safetensors"
    saved = read_features(path)
    if saved is not None:
        return saved, True, 0.0
    collator = get_task(cfg.task).collator(cfg, tokenizer, accelerator.device)
    loader = accelerator.prepare(batching.eval_loader(cfg, tokenized, collator))  # device placement, exact gathering
    features, labels, seconds, _ = encode(encoder, loader, accelerator, cfg.linear_probe.pooling)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Tensors only (no pickle), under a name of this process until complete: a killed or concurrent write is
    # never read as a cache entry.
    with written_through(path, path.with_name(f"{path.name}.{os.getpid()}.tmp")) as tmp:
        save_file({"features": features.contiguous(), "labels": labels.contiguous()}, tmp)
    return (features, labels), False, seconds


def read_features(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A cache entry's (features, labels), or None when there is none or it cannot be read (then re-encoded)."""
    if not path.is_file():
        return None
    try:
        saved = load_file(path)
        return saved["features"], saved["labels"]
    except (OSError, KeyError, SafetensorError) as err:
        print(f"ptrain: warning: feature cache {path} is unreadable ({err}); encoding again", file=sys.stderr)
        return None


def model_identity(cfg: Config) -> str:
    """Content hash of the pretrained model's config and weight files, or the scratch config and seed."""
    if cfg.model.scratch_config is not None:
        return json.dumps(cfg.model.scratch_config, sort_keys=True) + f"seed={cfg.train.seed}"
    folder = Path(resolve_model_path(cfg.model.name_or_path))
    if not folder.is_dir():
        return cfg.model.name_or_path  # a Hub id: its cache holds one revision
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*")):
        if file.name == "config.json" or file.suffix in (".safetensors", ".bin"):
            with open(file, "rb") as handle:
                digest.update(file.name.encode() + hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def fit_head(
    cfg: Config, features: torch.Tensor, labels: torch.Tensor, num_labels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression on standardised features, folded back into one linear map of the raw features
    (w / scale, b - w . mean / scale): the export applies it to the encoder's output as it is."""
    from sklearn.linear_model import LogisticRegression  # imported here: 0.5 s that only the probe needs
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features.numpy())
    classifier = LogisticRegression(C=cfg.linear_probe.regularization_c, max_iter=cfg.linear_probe.max_iter)
    classifier.fit(scaler.transform(features.numpy()), labels.numpy())
    coef, intercept = (
        torch.tensor(classifier.coef_, dtype=torch.float32),
        torch.tensor(classifier.intercept_, dtype=torch.float32),
    )
    if coef.shape[0] == 1:  # two classes: scikit-learn keeps the logit of class 1 only; class 0 gets logit 0
        coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros(1), intercept])
    classes = torch.tensor(classifier.classes_)
    weight, bias = (
        torch.zeros(num_labels, coef.shape[1]),
        torch.full((num_labels,), -1e4),
    )  # unseen ids: never predicted
    scale, mean = torch.tensor(scaler.scale_, dtype=torch.float32), torch.tensor(scaler.mean_, dtype=torch.float32)
    weight[classes] = coef / scale
    bias[classes] = intercept - (coef * mean / scale).sum(1)
    return weight, bias


def score(weight, bias, features, labels, majority: int, num_labels: int) -> dict[str, float]:
    predictions = (features @ weight.T + bias).argmax(-1)
    baseline = label_scores(torch.full_like(labels, majority), labels, num_labels)
    return {**label_scores(predictions, labels, num_labels), **{f"majority_{k}": v for k, v in baseline.items()}}


def export_probe(cfg: Config, encoder, tokenizer, weight, bias, names: list[str], out_dir: Path) -> None:
    """The encoder folder (pipeline("feature-extraction") loads it), its tokenizer, and the head beside it;
    config.json records the task, pooling, max_length and label names for `ptrain predict` and `ptrain eval`."""
    config = encoder.config
    config.ptrain_task, config.probe_pooling, config.probe_max_length = (
        "linear_probe",
        cfg.linear_probe.pooling,
        cfg.data.max_length,
    )
    config.id2label, config.label2id = dict(enumerate(names)), {name: i for i, name in enumerate(names)}
    head = {"weight": weight.contiguous(), "bias": bias.contiguous()}
    save_folder(encoder, tokenizer, out_dir, add_files=lambda tmp: save_file(head, str(tmp / HEAD_FILE)))


def track(cfg, tracker: Tracker, scores, validation, splits, weight, bias, names) -> None:
    """Scalars of every split, the validation confusion matrix, the validation features in the projector."""
    for split, values in scores.items():
        prefix = "eval" if split == "validation" else split
        tracker.scalars({f"{prefix}/{k}": v for k, v in values.items()}, 0)
    features, labels = validation
    predictions = (features @ weight.T + bias).argmax(-1)
    confusion = multiclass_confusion_matrix(predictions, labels, len(names))
    tracker.figure("eval/confusion_matrix", confusion_figure(confusion, names), 0)
    rows = min(cfg.linear_probe.projector_rows, len(labels))
    if rows:
        chosen = (
            torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.train.seed))[:rows].sort().values
        )
        texts = splits.raw["validation"][cfg.data.text_column]
        metadata = [[names[int(labels[i])], " ".join(texts[int(i)].split())[:200]] for i in chosen]
        tracker.embedding(features[chosen], metadata, ["label", "text"], "validation_features")
