"""pretrain.reuse and retrieval.reuse: another run's student, Slow or Fast model imported with
its provenance, or refused clearly."""

import hashlib
import json

import pytest
import torch

from vldistill.models.config import StudentConfig
from vldistill.models.factory import (
    create_student,
    load_checkpoint,
    load_fast,
    save_checkpoint,
    save_fast,
)
from vldistill.models.fast import FastDualEncoder
from vldistill.seeds import checkpoint_provenance, checkpoint_seeds
from vldistill.stages.imports import import_model

CFG = StudentConfig(image_size=32, width=32, heads=2, text_layers=1, fusion_layers=1,
                    decoder_layers=1, context_length=16)


@pytest.fixture
def source(tmp_path):
    """A task-agnostic student as another run (dataset 'coco') leaves it."""
    folder = tmp_path / "other/models/coco/student/seed-0"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    save_checkpoint(folder / "agnostic-mad.safetensors", create_student(CFG),
                    extra={"stage": "task_agnostic", "variant": "mad", "dataset": "coco",
                           "seeds": {"data": 3, "pretrain": 0, "task_agnostic": 0}})
    (folder / "agnostic-mad.json").write_text(json.dumps({"final": {"loss": 1.5}}))
    return folder / "agnostic-mad.safetensors"


def test_an_imported_student_keeps_its_weights_and_records_where_it_came_from(source, tmp_path):
    out = tmp_path / "models/vqav2/student/seed-0/agnostic-mad.safetensors"
    summary = import_model(setting="pretrain.reuse", source=source,
                           source_metrics=source.with_suffix(".json"), student=CFG.to_dict(),
                           out_path=out, metrics_path=out.with_suffix(".json"))
    ours, theirs = load_checkpoint(out)[0], load_checkpoint(source)[0]
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    [record] = checkpoint_provenance(out)
    assert record == {"path": str(source.resolve()),
                      "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                      "dataset": "coco", "stage": "task_agnostic", "variant": "mad",
                      "seeds": {"data": 3, "pretrain": 0, "task_agnostic": 0},
                      "student_config": CFG.to_dict()}
    assert summary["final"] == {"loss": 1.5} and summary["provenance"] == [record]
    assert json.loads(out.with_suffix(".json").read_text()) == summary
    # the source's data seed is another dataset's; this run's data seed joins it downstream
    assert checkpoint_seeds(out) == {"source_data": 3, "pretrain": 0, "task_agnostic": 0}
    # imported twice: the chain keeps both records, oldest first
    again = tmp_path / "models/vcr/student/seed-0/agnostic-mad.safetensors"
    import_model(setting="pretrain.reuse", source=out, source_metrics=out.with_suffix(".json"),
                 student=CFG.to_dict(), out_path=again, metrics_path=again.with_suffix(".json"))
    assert [r["path"] for r in checkpoint_provenance(again)] == [str(source.resolve()),
                                                                 str(out.resolve())]


def test_a_student_of_another_config_is_refused_naming_each_difference(source, tmp_path):
    out = tmp_path / "models/vqav2/student/seed-0/agnostic-mad.safetensors"
    wider = {**CFG.to_dict(), "width": 64, "heads": 4}
    with pytest.raises(ValueError) as info:
        import_model(setting="pretrain.reuse", source=source,
                     source_metrics=source.with_suffix(".json"), student=wider, out_path=out,
                     metrics_path=out.with_suffix(".json"))
    message = str(info.value)
    assert "pretrain.reuse:" in message and str(source) in message
    assert "student.width: source 32, this run 64" in message
    assert "student.heads: source 2, this run 4" in message
    assert "set pretrain.reuse to null" in message
    assert not out.exists()


def test_an_imported_fast_model_keeps_its_format_weights_and_provenance(tmp_path):
    folder = tmp_path / "other/models/coco/retrieval/seed-0"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    source = folder / "fast_distilled.safetensors"
    save_fast(source, FastDualEncoder(CFG, 16),
              {"stage": "fast", "dataset": "coco", "temperature": 0.05, "distilled": True,
               "seeds": {"data": 3, "pretrain": 0, "retrieval": 0}, "provenance": []})
    source.with_suffix(".json").write_text(json.dumps({"final": {"loss": 2.0}}))
    out = tmp_path / "models/flickr/retrieval/seed-0/fast_distilled.safetensors"
    import_model(setting="retrieval.reuse", source=source,
                 source_metrics=source.with_suffix(".json"), student=CFG.to_dict(),
                 out_path=out, metrics_path=out.with_suffix(".json"))
    ours, extra = load_fast(out)
    for (name, a), (_, b) in zip(ours.state_dict().items(),
                                 load_fast(source)[0].state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert extra["temperature"] == 0.05 and extra["distilled"] is True
    [record] = extra["provenance"]
    assert (record["dataset"], record["stage"]) == ("coco", "fast")
    assert extra["seeds"] == {"source_data": 3, "pretrain": 0, "retrieval": 0}
    with pytest.raises(ValueError, match=r"retrieval.reuse: .*student.width: source 32"):
        import_model(setting="retrieval.reuse", source=source,
                     source_metrics=source.with_suffix(".json"),
                     student={**CFG.to_dict(), "width": 64}, out_path=tmp_path / "x.safetensors",
                     metrics_path=tmp_path / "x.json")
