import polars as pl
import pytest
import torch

from vldistill.data.images import load_image_bank
from vldistill.data.manifest import conform, manifest_path, read_manifest
from vldistill.data.truth import CaptionTruth, claim_from_json, claim_to_json, scene_from_json
from vldistill.distill.agnostic import AGNOSTIC_START, agnostic_config
from vldistill.models.config import StudentConfig
from vldistill.models.factory import create_student
from vldistill.models.tokenizer import Tokenizer
from vldistill.synthetic.images import SyntheticConfig, generate
from vldistill.synthetic.language import Count, Exists, Ref, Related, holds
from vldistill.train.loop import TrainConfig, summarise_history, train
from vldistill.train.pretrain import (
    PretrainObjective,
    build_caption_corpus,
    caption_batch,
    caption_vocabulary,
    hide_tokens,
    masked_lm_loss,
    matching_check,
    matching_metrics,
    pretrain_loss,
    sample_false,
)

COUNTS = {"train": 16, "val": 6, "test": 2, "test_shifted": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(SyntheticConfig(counts=COUNTS, captions_per_image=2), root, seed=0, progress=False)
    return root


def corpus_of(root, split):
    bank = load_image_bank(root, [manifest_path(root, split, "images")], 64, progress=False)
    captions = read_manifest(manifest_path(root, split, "captions"), "captions")
    images = read_manifest(manifest_path(root, split, "images"), "images")
    return bank, build_caption_corpus(captions, bank, Tokenizer(context_length=24), images)


def test_every_claim_survives_json_and_holds_in_its_own_scene(tiny):
    captions = read_manifest(manifest_path(tiny, "train", "captions"), "captions")
    images = read_manifest(manifest_path(tiny, "train", "images"), "images")
    scenes = {r["image_id"]: scene_from_json(r["scene"], r["domain"])
              for r in images.iter_rows(named=True)}
    for row in captions.iter_rows(named=True):
        claim, background = claim_from_json(row["claim"])
        assert claim_to_json(claim, background) == row["claim"]
        assert holds(claim, scenes[row["image_id"]])
        # a caption that names the background claims it
        assert (background is not None) == ("background" in row["caption"])


def test_caption_truth_follows_the_claim_not_the_caption_owner(tiny):
    captions = read_manifest(manifest_path(tiny, "train", "captions"), "captions")
    images = read_manifest(manifest_path(tiny, "train", "images"), "images")
    truth = CaptionTruth.build(captions, images)
    true = truth.matrix(torch.arange(len(captions)), torch.arange(len(images)))
    own = torch.tensor(truth.own_image)
    assert true[torch.arange(len(captions)), own].all()
    for c in range(len(captions)):
        claim, _ = claim_from_json(captions["claim"][c])
        for i in range(len(images)):
            assert bool(true[c, i]) == holds(claim, truth.scenes[i]), (c, i)
    # some caption is true of an image other than its own (e.g. a count caption)
    assert true.sum() > len(captions)


def test_without_claims_a_caption_is_true_only_where_its_text_is():
    images = pl.DataFrame({"image_id": ["a", "b", "c"], "image_path": ["a", "b", "c"],
                           "domain": ["source"] * 3, "width": [8] * 3, "height": [8] * 3,
                           "scene": [None] * 3})
    captions = conform(pl.DataFrame({
        "image_id": ["a", "b", "c"], "image_path": ["a", "b", "c"],
        "caption_id": ["a0", "b0", "c0"], "caption": ["a dog", "a cat", "a dog"],
        "hard_negative": [None] * 3}), "captions")
    assert captions["claim"].is_null().all()  # real formats carry no claim
    truth = CaptionTruth.build(captions, conform(images, "images"))
    assert truth.matrix(torch.arange(3), torch.arange(3)).tolist() == [
        [True, False, True], [False, True, False], [True, False, True]]


def test_a_count_claim_is_true_of_every_scene_with_that_count(tiny):
    images = read_manifest(manifest_path(tiny, "train", "images"), "images")
    scene = scene_from_json(images["scene"][0], images["domain"][0])
    n = len(scene.objects)
    assert holds(Count(n), scene) and not holds(Count(n + 1), scene)
    obj = scene.objects[0]
    assert holds(Exists((Ref(obj.color, obj.shape),)), scene)
    if n >= 2:
        other = scene.objects[1]
        rel = "left" if obj.col < other.col else "right" if obj.col > other.col else (
            "above" if obj.row < other.row else "below")
        assert holds(Related(Ref(obj.color, obj.shape), rel, Ref(other.color, other.shape)),
                     scene)


def test_mined_negatives_are_never_positives_and_prefer_similar_ones():
    torch.manual_seed(0)
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 1] = True  # caption 1 is also true of image 0
    positives[5] = True  # image 5: every caption true, no negative exists
    similarity = torch.zeros(6, 6)
    similarity[:, 2] = 8.0  # column 2 is the hardest
    rows, cols = sample_false(similarity, positives)
    assert rows.tolist() == [0, 1, 2, 3, 4]
    assert not positives[rows, cols].any()
    picks = torch.stack([sample_false(similarity, positives)[1] for _ in range(200)])
    assert (picks[:, 0] == 2).float().mean() > 0.9  # row 0 draws the similar false column


def test_pretraining_lowers_its_losses_and_reports_held_out_matching(tiny):
    bank, corpus = corpus_of(tiny, "train")
    val_bank, val_corpus = corpus_of(tiny, "val")
    assert len(corpus) == 32 and corpus.has_negative.all() and corpus.truth is not None
    check = matching_check(val_corpus, 64)
    assert len(check.rows) == len(val_corpus) == 12
    # every held-out "false" caption really is false of the image it is shown with
    for row, false in zip(check.rows.tolist(), check.false_rows.tolist(), strict=True):
        assert not val_corpus.true_of(torch.tensor([false]),
                                      val_corpus.image_rows[[row]]).item()

    torch.manual_seed(0)
    cfg = StudentConfig(width=32, heads=2, text_layers=1, fusion_layers=1, decoder_layers=3,
                        context_length=24)
    model = create_student(cfg)
    vocabulary = caption_vocabulary(corpus)
    assert 10 < len(vocabulary) < 200
    model.decoder.set_output_vocabulary(vocabulary)
    history = train(
        model,
        lambda m, batch: pretrain_loss(m, corpus, batch.images(m.device), batch.rows),
        len(corpus),
        TrainConfig(steps=60, batch_size=8, lr=1e-2, warmup_steps=3, checkpoint_every=60),
        tiny / "state.pt",
        progress=False,
        validate=lambda m: matching_metrics(m, val_corpus, val_bank, check),
        validate_every=20,
        images=(bank, corpus.image_rows),
    )
    first, last = history[:4], history[-4:]
    assert sum(h["caption"] for h in last) < 0.8 * sum(h["caption"] for h in first)
    assert sum(h["loss"] for h in last) < 0.9 * sum(h["loss"] for h in first)
    assert sum(h["itc"] for h in last) < sum(h["itc"] for h in first)
    assert sum(h["mlm"] for h in last) < 0.95 * sum(h["mlm"] for h in first)
    assert all(0.0 <= h["itm_hard_negative_accuracy"] <= 1.0 for h in history)
    summary = summarise_history(history, {})
    assert [v["step"] for v in summary["validation"]] == [19, 39, 59]
    assert 0.0 <= summary["final_validation"]["val_itm_vs_random"] <= 1.0
    assert "val_itm_vs_random" not in summary["final"]


def test_every_method_starts_from_a_student_with_the_same_task_agnostic_budget():
    assert AGNOSTIC_START["baseline"] == AGNOSTIC_START["kd"] == "plain"
    assert agnostic_config("plain") is None
    mad, no_ts = agnostic_config("mad", tau=0.1, ema=0.9), agnostic_config("mad-ts")
    assert mad.token_selection and not no_ts.token_selection
    assert not mad.confidence_weighting and not mad.adaptive
    with pytest.raises(ValueError, match="unknown task-agnostic variant"):
        agnostic_config("mad-cw")


def test_mlm_hides_only_content_tokens_and_at_least_one_per_caption():
    # rows: 6 real tokens (SOT, 4 content, EOT), 3 real tokens, 2 real tokens (no content)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]],
                        dtype=torch.bool)
    content = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0], [0] * 6], dtype=torch.bool)
    torch.manual_seed(0)
    for probability in (0.01, 0.3, 1.0):
        for _ in range(50):
            hidden = hide_tokens(mask, probability)
            assert not (hidden & ~content).any()  # never SOT, EOT or padding
            assert hidden[:2].any(dim=1).all()  # every caption with content hides one
            assert not hidden[2].any()
    assert hide_tokens(mask, 1.0).equal(content)
    counts = sum(hide_tokens(mask, 0.3)[0].sum() for _ in range(400)) / 400
    assert 1.2 < counts < 2.0  # 4 x 0.3, plus the guaranteed one where none was drawn


def test_mlm_predicts_hidden_words_from_the_image(tiny):
    """The hidden word's loss depends on the image and sends gradient into the vision tower:
    the signal that makes the fusion encoder read the picture."""
    bank, corpus = corpus_of(tiny, "train")
    torch.manual_seed(0)
    model = create_student(StudentConfig(width=32, heads=2, text_layers=1, fusion_layers=1,
                                         decoder_layers=1, context_length=24))
    model.decoder.set_output_vocabulary(caption_vocabulary(corpus))
    rows = torch.arange(8)
    ids, mask = caption_batch(corpus, rows)
    images = bank.at(corpus.image_rows[rows], "cpu")
    torch.manual_seed(1)
    loss = masked_lm_loss(model, model.encode_image(images), ids, mask, 0.3)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert model.vision.proj[0].weight.grad.abs().sum() > 0
    assert model.text.mask_embedding.grad.abs().sum() > 0
    with torch.no_grad():
        torch.manual_seed(1)  # the same hidden tokens, other images
        other = masked_lm_loss(model, model.encode_image(images.flip(0)), ids, mask, 0.3)
    assert not torch.isclose(loss, other)
    terms = pretrain_loss(model, corpus, images, rows)
    assert "mlm" in terms
    assert "mlm" not in pretrain_loss(model, corpus, images, rows,
                                      PretrainObjective(mlm_weight=0.0))
