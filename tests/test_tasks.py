import json

import polars as pl
import pytest
import torch

from vldistill.data.images import ImageBank, load_image_bank
from vldistill.data.manifest import VE_LABELS, manifest_path, read_manifest
from vldistill.eval import answer_vocabulary, official_normalize_answer, vqa_score
from vldistill.models.config import HeadsConfig, StudentConfig
from vldistill.models.factory import create_student
from vldistill.models.student import Student
from vldistill.models.tokenizer import Tokenizer
from vldistill.synthetic.images import SyntheticConfig, generate
from vldistill.train import tasks
from vldistill.train.loop import TrainConfig, train
from vldistill.train.tasks import (
    TaskData,
    build_task_data,
    evaluate,
    evaluate_items,
    task_logits,
    task_loss,
)

CONTEXT = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("synthetic")
    counts = {"train": 12, "val": 4, "test": 4, "test_shifted": 4}
    generate(SyntheticConfig(counts=counts), path, seed=0, progress=False)
    return path


@pytest.fixture(scope="module")
def bank(root) -> ImageBank:
    return load_image_bank(root, [manifest_path(root, "train", "images")], 64, progress=False)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(context_length=CONTEXT)


def frame(root, task: str) -> pl.DataFrame:
    return read_manifest(manifest_path(root, "train", task), task)


@pytest.fixture(scope="module")
def vocab(root) -> list[str]:
    words = answer_vocabulary(frame(root, "vqa")["answers"].to_list())
    return words if "2" in words else [*words, "2"]


def make_model(vocab: list[str]) -> Student:
    torch.manual_seed(0)
    cfg = StudentConfig(width=32, heads=2, text_layers=1, fusion_layers=1,
                        context_length=CONTEXT)
    return create_student(cfg, HeadsConfig(vqa_answers=len(vocab))).eval()


def all_tasks(root, bank, tokenizer, vocab) -> dict[str, TaskData]:
    return {
        "vqa": build_task_data("vqa", frame(root, "vqa"), bank, tokenizer, vocab),
        "ve": build_task_data("ve", frame(root, "ve"), bank, tokenizer),
        "vcr": build_task_data("vcr", frame(root, "vcr"), bank, tokenizer),
    }


def test_vqa_task_data_shapes_gold_and_soft_targets(root, bank, tokenizer, vocab):
    df = frame(root, "vqa")
    df = df.with_columns(
        pl.Series("answers", [["2"] * 10, *df["answers"].to_list()[1:]],
                  dtype=pl.List(pl.String))
    )
    data = build_task_data("vqa", df, bank, tokenizer, vocab)
    n = len(df)
    assert len(data) == n and data.ids.shape == data.mask.shape == (n, CONTEXT)
    assert data.targets.shape == (n, len(vocab)) and data.gold.shape == (n,)
    assert data.primary_text == df["question"].to_list()
    assert torch.equal(data.image_rows, bank.rows(df["image_id"].to_list()))
    two = vocab.index("2")
    assert data.targets[0, two] == 1.0 and data.targets[0].sum() == 1.0
    assert data.gold[0] == two
    # the synthetic manifest's multiple-choice answer is the most common normalised answer
    for i, answer in enumerate(df["multiple_choice_answer"].to_list()[1:], start=1):
        assert data.gold[i] == vocab.index(official_normalize_answer(answer))
    assert ((data.targets >= 0) & (data.targets <= 1)).all()
    assert data.item_ids == df["question_id"].to_list() and data.stage is None


def test_ve_task_data_and_unknown_label(root, bank, tokenizer):
    df = frame(root, "ve")
    data = build_task_data("ve", df, bank, tokenizer)
    assert data.ids.shape == (len(df), CONTEXT) and data.answers is None
    expected = [VE_LABELS.index(label) for label in df["label"].to_list()]
    assert data.gold.tolist() == expected and data.targets.tolist() == expected
    assert data.item_ids == df["pair_id"].to_list()
    assert data.primary_text == df["hypothesis"].to_list()
    bad = df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("maybe"))
                          .otherwise(pl.col("label")).alias("label"))
    with pytest.raises(ValueError, match=df["pair_id"][2]):
        build_task_data("ve", bad, bank, tokenizer)


def test_vcr_task_data_has_two_stages_per_item(root, bank, tokenizer):
    df = frame(root, "vcr")
    data = build_task_data("vcr", df, bank, tokenizer)
    n = len(df)
    assert len(data) == 2 * n and data.ids.shape == data.mask.shape == (2 * n, 4, CONTEXT)
    assert data.stage == ["q2a"] * n + ["qa2r"] * n
    assert data.item_ids == df["item_id"].to_list() * 2
    assert data.gold[:n].tolist() == df["answer_label"].to_list()
    assert data.gold[n:].tolist() == df["rationale_label"].to_list()
    assert torch.equal(data.targets, data.gold)
    assert data.primary_text == df["question"].to_list() * 2
    # every candidate row ends in EOT, truncated or not
    last = data.mask.sum(dim=-1) - 1
    assert (data.ids.gather(-1, last[..., None]) == tokenizer.eot_id).all()
    first = df.row(0, named=True)
    gold_answer = first["answers"][first["answer_label"]]
    texts = tokenizer.decode(data.ids[n], data.mask[n])  # QA->R candidates carry the gold answer
    assert len(set(texts)) == 4 and all(gold_answer in t for t in texts)


def test_inputs_are_validated(root, bank, tokenizer, vocab):
    df = frame(root, "ve")
    with pytest.raises(ValueError, match="unknown task"):
        build_task_data("captions", df, bank, tokenizer)
    with pytest.raises(ValueError, match="no rows"):
        build_task_data("ve", df.clear(), bank, tokenizer)
    with pytest.raises(ValueError, match="answer_vocab"):
        build_task_data("vqa", frame(root, "vqa"), bank, tokenizer)
    with pytest.raises(ValueError, match="hypothesis"):
        build_task_data("ve", df.drop("hypothesis"), bank, tokenizer)


def test_task_logits_shapes_and_batched_vcr_equals_per_candidate(root, bank, tokenizer, vocab):
    data = all_tasks(root, bank, tokenizer, vocab)
    model = make_model(vocab)
    rows = torch.tensor([0, 3, 5])
    with torch.no_grad():
        assert task_logits(model, data["vqa"], rows, bank).shape == (3, len(vocab))
        assert task_logits(model, data["ve"], rows, bank).shape == (3, 3)
        vcr = data["vcr"]
        logits = task_logits(model, vcr, rows, bank)
        assert logits.shape == (3, 4)
        images = bank.pixels[vcr.image_rows[rows]].float() / 127.5 - 1.0
        looped = torch.stack([
            model.forward_task("vcr", images, vcr.ids[rows, k], vcr.mask[rows, k])
            for k in range(4)
        ], dim=1)
        assert torch.allclose(logits, looped, atol=1e-5)
        # precomputed vision outputs and float images give the same logits as the bank
        vision = model.encode_image(images)
        assert torch.allclose(task_logits(model, vcr, rows, vision=vision), logits, atol=1e-6)
        assert torch.allclose(task_logits(model, vcr, rows, images), logits, atol=1e-6)
    with pytest.raises(ValueError, match="ImageBank"):
        task_logits(model, vcr, rows)


def test_task_losses_are_finite_scalars(root, bank, tokenizer, vocab):
    data = all_tasks(root, bank, tokenizer, vocab)
    model = make_model(vocab)
    rows = torch.arange(4)
    for name, d in data.items():
        loss = task_loss(task_logits(model, d, rows, bank), d, rows)
        assert loss.ndim == 0 and torch.isfinite(loss), name
    # VQA: BCE summed over answers, averaged over questions
    vqa = data["vqa"]
    logits = torch.zeros(4, len(vocab))
    expected = torch.log(torch.tensor(2.0)) * len(vocab)
    assert torch.isclose(task_loss(logits, vqa, rows), expected)


def test_evaluate_returns_json_ready_metrics(root, bank, tokenizer, vocab):
    data = all_tasks(root, bank, tokenizer, vocab)
    model = make_model(vocab).train()
    vqa = evaluate(model, data["vqa"], bank, batch_size=7)
    assert set(vqa) == {"accuracy", "n"} and vqa["n"] == len(data["vqa"])
    ve = evaluate(model, data["ve"], bank, batch_size=7)
    assert set(ve) == {"accuracy", "n", "chance"} and ve["n"] == len(data["ve"])
    assert ve["chance"] == {"accuracy": pytest.approx(1 / 3)}
    vcr = evaluate(model, data["vcr"], bank, batch_size=7)
    assert set(vcr) == {"q2a", "qa2r", "q2ar", "n", "chance"}
    assert vcr["n"] == len(data["vcr"]) // 2
    for result in (vqa, ve, vcr):
        json.dumps(result)
    assert model.training  # mode restored


def one_hot_logits(data: TaskData, rows: torch.Tensor, right: torch.Tensor,
                   classes: int) -> torch.Tensor:
    """Logits whose argmax is the gold class where ``right`` holds, another class elsewhere."""
    gold = data.gold[rows].clamp(min=0)
    pick = torch.where(right[rows], gold, (gold + 1) % classes)
    return torch.nn.functional.one_hot(pick, classes).float()


def test_evaluate_vqa_scores_gold_predictions_officially(root, bank, tokenizer, vocab,
                                                         monkeypatch):
    df = frame(root, "vqa")
    agreed = df.with_columns(pl.col("multiple_choice_answer").repeat_by(10).alias("answers"))
    data = build_task_data("vqa", agreed, bank, tokenizer, vocab)
    right = torch.ones(len(data), dtype=torch.bool)
    monkeypatch.setattr(tasks, "task_logits", lambda model, d, rows, *args, **kwargs:
                        one_hot_logits(d, rows, right, len(vocab)))
    model = make_model(vocab)
    assert evaluate(model, data, bank, batch_size=5) == {"accuracy": 1.0, "n": len(data)}

    right[1::2] = False  # a wrong answer scores 0 where all annotators agree
    result = evaluate(model, data, bank, batch_size=5)
    assert result["accuracy"] == pytest.approx(right.float().mean().item())

    # with the raw, disagreeing annotators the result is the official metric of the predictions
    raw = build_task_data("vqa", df, bank, tokenizer, vocab)
    predicted = one_hot_logits(raw, torch.arange(len(raw)), right, len(vocab)).argmax(dim=1)
    expected = vqa_score([vocab[k] for k in predicted.tolist()], raw.answers, normalize_gt=True)
    assert evaluate(model, raw, bank, batch_size=5) == pytest.approx(expected)


def test_evaluate_vcr_q2ar_needs_both_stages_right(root, bank, tokenizer, monkeypatch):
    data = build_task_data("vcr", frame(root, "vcr"), bank, tokenizer)
    n = len(data) // 2
    item = torch.arange(n)
    right = torch.cat([item % 2 == 0, item % 3 == 0])  # q2a right on even items, qa2r on 0 mod 3
    monkeypatch.setattr(tasks, "task_logits", lambda model, d, rows, *args, **kwargs:
                        one_hot_logits(d, rows, right, 4))
    result = evaluate(make_model(["yes"]), data, bank, batch_size=5)
    both = ((item % 2 == 0) & (item % 3 == 0)).float().mean().item()
    assert result["q2a"] == pytest.approx(0.5) and result["qa2r"] == pytest.approx(4 / 12)
    assert result["q2ar"] == pytest.approx(both) and result["n"] == n == 12
    assert result["chance"]["q2ar"] == pytest.approx(1 / 16)


def test_item_scores_are_each_items_share_of_the_metric(root, bank, tokenizer, vocab,
                                                        monkeypatch):
    data = all_tasks(root, bank, tokenizer, vocab)
    classes = {"vqa": len(vocab), "ve": 3, "vcr": 4}
    for task, task_data in data.items():
        right = torch.arange(len(task_data)) % 3 != 1
        monkeypatch.setattr(tasks, "task_logits", lambda model, d, rows, *args, right=right,
                            **kwargs: one_hot_logits(d, rows, right, classes[d.task]))
        metrics, items = evaluate_items(make_model(vocab), task_data, bank, batch_size=5)
        assert metrics == evaluate(make_model(vocab), task_data, bank, batch_size=5)
        assert items.columns == ["item", "metric", "score"]
        means = dict(items.group_by("metric").agg(pl.col("score").mean()).iter_rows())
        names = ("q2a", "qa2r", "q2ar") if task == "vcr" else ("accuracy",)
        assert means == pytest.approx({m: metrics[m] for m in names})
        ids = sorted(set(task_data.item_ids))
        for _, group in items.group_by("metric"):
            assert sorted(group["item"]) == ids  # each item scored once per metric
        if task == "vcr":  # Q->AR right exactly where both stages are
            wide = items.pivot(on="metric", index="item", values="score")
            assert (wide["q2ar"] == wide["q2a"] * wide["qa2r"]).all()


@pytest.fixture
def one_thread():
    # a tiny model gains nothing from threads, and spinning ones stall on a busy shared CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_few_ve_training_steps_lower_the_loss(root, bank, tokenizer, vocab, tmp_path,
                                                one_thread):
    # VE has no text-only shortcut, so a few steps cannot generalise: fitting 12 pairs shows
    # the loss and its gradients reach the head, fusion and towers
    data = build_task_data("ve", frame(root, "ve").head(12), bank, tokenizer)
    model = make_model(vocab)
    history = train(
        model,
        lambda m, batch: {"loss": task_loss(task_logits(m, data, batch.rows,
                                                        batch.images(m.device)),
                                            data, batch.rows)},
        len(data),
        TrainConfig(steps=30, batch_size=12, lr=3e-3, warmup_steps=2, checkpoint_every=30),
        tmp_path / "state.pt",
        progress=False,
        images=(bank, data.image_rows),
    )
    first, last = history[:3], history[-3:]
    assert sum(h["loss"] for h in last) < 0.8 * sum(h["loss"] for h in first)
