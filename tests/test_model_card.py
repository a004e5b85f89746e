"""The model card's metadata is what huggingface_hub reads back: ModelCard.load and metadata_load parse it, and its
model-index names the data each set was scored on (the Hub dataset, or the file the set was read from)."""

from __future__ import annotations

from types import SimpleNamespace

from huggingface_hub import ModelCard, metadata_load

from ptrain.outputs.model_card import model_card
from ptrain.tasks import get_task, load_config
from tests.conftest import CONFIGS

SCORES = {"validation": {"weighted_f1": 0.61234567, "loss": 1.1}, "heldout": {"weighted_f1": 0.5}}


def written_card(tmp_path, *overrides: str) -> ModelCard:
    """The card of an export scored on validation and the named set `heldout`, loaded back from README.md."""
    cfg = load_config(CONFIGS / "tiny.yaml", ["data.eval_files={heldout: emotion/test.txt}", *overrides])
    splits = SimpleNamespace(label_names=["sadness", "joy"], tokenized={"train": range(100), "validation": range(20)})
    plan = SimpleNamespace(steps_per_epoch=10)
    run = SimpleNamespace(
        cfg=cfg, task=get_task(cfg.task), optim=SimpleNamespace(plan=plan), data=SimpleNamespace(splits=splits)
    )
    path = tmp_path / "README.md"
    path.write_text(model_card(run, SCORES, step=25))
    assert metadata_load(path)["model-index"][0]["name"] == "tiny"
    return ModelCard.load(path)


def scored(card: ModelCard) -> dict[str, tuple]:
    """Per scored set: (dataset type, name, split, config) and its metrics, from the parsed model-index."""
    sets: dict[str, tuple] = {}
    for result in card.data.eval_results:
        dataset = (result.dataset_type, result.dataset_name, result.dataset_split, result.dataset_config)
        key = result.dataset_split
        sets[key] = (dataset, {**(sets[key][1] if key in sets else {}), result.metric_type: result.metric_value})
    return sets


def test_a_card_of_local_files_names_them_in_its_model_index(tmp_path):
    card = written_card(tmp_path)
    assert card.text.lstrip().startswith("# tiny") and "## Intended uses and limitations" in card.text
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert card.data.tags == ["ptrain", "sequence_classification"]
    assert card.data.base_model is None and card.data.datasets is None  # a scratch model, local files: no Hub ids
    assert scored(card) == {
        "validation": (
            ("emotion/val.txt", "emotion/val.txt", "validation", None),
            {"weighted_f1": 0.6123, "loss": 1.1},
        ),
        "heldout": (("emotion/test.txt", "emotion/test.txt", "heldout", None), {"weighted_f1": 0.5}),
    }


def test_a_card_of_hub_data_names_the_hub_dataset(tmp_path):
    hub = ["data.train_file=null", "data.validation_file=null", "data.hub_dataset=dair-ai/emotion"]
    card = written_card(
        tmp_path, *hub, "data.hub_config=split", "model.scratch_config=null", "model.name_or_path=prajjwal1/bert-tiny"
    )
    assert card.data.datasets == ["dair-ai/emotion"] and card.data.base_model == "prajjwal1/bert-tiny"
    sets = scored(card)
    assert sets["validation"][0] == ("dair-ai/emotion", "dair-ai/emotion", "validation", "split")
    assert sets["heldout"][0] == ("emotion/test.txt", "emotion/test.txt", "heldout", None)  # a named set is a file
