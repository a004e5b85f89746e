"""Zero-shot on emotion validation (docs/zero_shot.md): pipeline() and `ptrain predict --candidate-labels` output
against the gold labels, beside the majority-class baseline. Usage: python docs/zero_shot_emotion.py MODEL ROWS PREDS"""

import json
import sys
from collections import Counter

from sklearn.metrics import accuracy_score, f1_score
from transformers import pipeline

model, rows_file, ptrain_out = sys.argv[1:4]
rows = [json.loads(line) for line in open(rows_file)]
texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
labels = ["sadness", "joy", "love", "anger", "fear", "surprise"]
classifier = pipeline("zero-shot-classification", model=model)
results = classifier(texts, candidate_labels=labels, hypothesis_template="This example is {}.", batch_size=64)
by_pipeline = [r["labels"][0] for r in results]
ptrain_rows = [json.loads(line) for line in open(ptrain_out)]
by_ptrain = [r["label"] for r in ptrain_rows]
gap = max(abs(r["scores"][0] - p["score"]) for r, p in zip(results, ptrain_rows))
majority = Counter(gold).most_common(1)[0][0]
for name, predicted in (
    ("pipeline()", by_pipeline),
    ("ptrain predict", by_ptrain),
    (f"majority ({majority})", [majority] * len(gold)),
):
    weighted_f1 = f1_score(gold, predicted, average="weighted")
    print(f"{name}: accuracy {accuracy_score(gold, predicted):.4f}, weighted F1 {weighted_f1:.4f}")
print(f"same labels: {by_pipeline == by_ptrain}; largest top-score difference {gap:.2e}; rows {len(gold)}")
