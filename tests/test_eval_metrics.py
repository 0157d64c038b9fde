"""Metrics against hand-computed values and the official VQA evaluation's behaviour."""

import math

import numpy as np
import pytest

from vldistill.eval import (
    accuracy,
    answer_vocabulary,
    chance_level,
    majority_answer_baseline,
    official_normalize_answer,
    soft_targets,
    vcr_scores,
    vocab_index,
    vqa_accuracy,
    vqa_score,
)

# --- normalisation (official processPunctuation / processDigitArticle)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),  # lower-cased, then number word -> digit
        ("none", "0"),
        ("the dog.", "dog"),  # trailing period stripped, article dropped
        ("yes!", "yes"),  # "!" not next to a space -> space, then split away
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("youre", "you're"),
        ("don't", "don't"),  # the apostrophe is not in the official punctuation list
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("5.", "5"),
        ("x.y", "xy"),  # a period is deleted, not spaced
        ("a red circle", "red circle"),
        ("An apple", "apple"),
        ("  yes\tno\n", "yes no"),
        ("t-shirt", "t shirt"),  # no space beside "-": replaced by a space
        ("red, blue", "red blue"),  # ", " occurs: "," deleted
        ("red,blue", "red blue"),
        ("the", ""),
    ],
)
def test_official_normalize_answer(raw: str, expected: str) -> None:
    assert official_normalize_answer(raw) == expected


def test_digit_comma_deletes_the_comma_and_every_other_mark() -> None:
    # commaStrip only decides delete-versus-space; it keeps nothing: "1,000" -> "1000".
    assert official_normalize_answer("1,000") == "1000"
    assert official_normalize_answer("1,000!") == "1000"  # "!" deleted too, not turned into a space
    assert official_normalize_answer("1,000 (approx)") == "1000 approx"


# --- per-question accuracy

OTHERS = ["cat", "bird", "fish", "cow", "pig", "hen", "fox", "owl", "bee", "elk"]


def answers_with(matches: int, answer: str = "dog") -> list[str]:
    return [answer] * matches + OTHERS[: 10 - matches]


def test_three_of_ten_matching() -> None:
    # Leaving out a match leaves 2 -> 2/3 (3 times); leaving out another leaves 3 -> 1 (7 times).
    assert vqa_accuracy("dog", answers_with(3)) == (7 * 1 + 3 * (2 / 3)) / 10 == 0.9


@pytest.mark.parametrize(
    ("matches", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (4, 1.0), (10, 1.0)],  # 1 match: 9 * (1/3) / 10
)
def test_accuracy_by_number_of_matches(matches: int, expected: float) -> None:
    answers = answers_with(matches)
    assert len(answers) == 10
    assert vqa_accuracy("dog", answers) == pytest.approx(expected, abs=1e-15)


def test_prediction_and_answers_are_processed_when_the_answers_disagree() -> None:
    answers = ["2"] * 4 + OTHERS[:6]
    assert vqa_accuracy("Two", answers) == 1.0
    assert vqa_accuracy("  the dog.\n", ["dog"] * 3 + OTHERS[:7]) == 0.9
    # answers get processDigitArticle too (master since the 2021 fix): "Two" -> "2", "yes!" ->
    # "yes ", split and joined -> "yes"; "t-shirt" -> "t shirt" on both sides
    assert vqa_accuracy("2", ["Two"] * 4 + OTHERS[:6]) == 1.0
    assert vqa_accuracy("yes", ["yes!"] * 9 + ["no"]) == 1.0
    assert vqa_accuracy("t shirt", ["t-shirt"] * 9 + ["no"]) == 1.0
    assert vqa_accuracy("T-Shirt", ["t-shirt"] * 9 + ["no"]) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["no"]) == 1.0


def test_identical_answers_are_compared_unprocessed_with_an_unprocessed_prediction() -> None:
    # Official: with all answers identical only whitespace is cleaned, on both sides
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes", ["yes\t"] * 10) == 1.0  # answers are stripped too
    assert vqa_accuracy("yes", ["yes!"] * 10) == 0.0
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 1.0
    assert vqa_accuracy("t shirt", ["t-shirt"] * 10) == 0.0
    assert vqa_accuracy("2", ["Two"] * 10) == 0.0
    assert vqa_accuracy("Two", ["Two"] * 10) == 1.0
    # whitespace cleaning comes before the identity test: "yes " and "yes" are identical
    assert vqa_accuracy("Yes", ["yes "] * 5 + ["yes"] * 5) == 0.0


def test_period_and_digit_quirks() -> None:
    assert official_normalize_answer("5.") == "5" and official_normalize_answer("3.5") == "3.5"
    assert official_normalize_answer("." * 40) == "." * 8  # re.UNICODE (32) is the count
    assert official_normalize_answer("\u0663.") == "\u0663"  # "\d" is ASCII: no digit follows
    assert official_normalize_answer("1\u066c5") == "1\u066c5"  # no ASCII digit-comma-digit


def test_normalize_gt_normalises_raw_annotator_answers() -> None:
    """Deviation: generated answers in raw spellings are normalised as the release's were."""
    assert vqa_accuracy("yes", ["yes!"] * 10, normalize_gt=True) == 1.0
    assert vqa_accuracy("2", ["Two"] * 10, normalize_gt=True) == 1.0
    assert vqa_accuracy("2", ["Two", "two", "2"] + OTHERS[:7], normalize_gt=True) == 0.9
    # the prediction is still only whitespace-cleaned when the answers are identical
    assert vqa_accuracy("Two", ["Two"] * 10, normalize_gt=True) == 0.0


def test_mean_over_annotators_is_an_exact_fraction() -> None:
    """Deviation: the official float sum gives 0.5999999999999999 for 2 of 10; here 18/30."""
    assert vqa_accuracy("dog", answers_with(2)) == 0.6
    assert sum([2 / 3] * 8 + [1 / 3] * 2) / 10 == pytest.approx(0.6, abs=1e-15)


def test_other_answer_counts() -> None:
    # Deviation: the official leave-one-out scores a single answer 0 whatever the prediction
    assert vqa_accuracy("dog", ["dog"]) == pytest.approx(1 / 3)  # no leave-one-out with one
    assert vqa_accuracy("cat", ["dog"]) == 0.0
    # Three answers, two matching: leaving a match out leaves 1 -> 1/3 (twice), else 2 -> 2/3.
    assert vqa_accuracy("dog", ["dog", "dog", "cat"]) == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)


def test_bad_question_input() -> None:
    with pytest.raises(ValueError, match="no ground-truth"):
        vqa_accuracy("dog", [])
    with pytest.raises(TypeError):
        vqa_accuracy("dog", "dog")


# --- dataset score


def test_vqa_score_with_answer_types() -> None:
    preds = ["yes", "no", "2", "dog"]
    answers = [["yes"] * 10, ["yes"] * 10, answers_with(3, "2"), answers_with(1)]
    types = ["yes/no", "yes/no", "number", "other"]
    result = vqa_score(preds, answers, types)
    assert result["n"] == 4
    assert result["accuracy"] == pytest.approx((1.0 + 0.0 + 0.9 + 0.3) / 4)
    assert result["accuracy/yes/no"] == 0.5 and result["n/yes/no"] == 2
    assert result["accuracy/number"] == 0.9 and result["n/number"] == 1
    assert result["accuracy/other"] == pytest.approx(0.3) and result["n/other"] == 1
    assert set(vqa_score(preds, answers)) == {"accuracy", "n"}


def test_vqa_score_validates_input() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 answer lists"):
        vqa_score(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="answer types"):
        vqa_score(["a"], [["a"]], ["other", "other"])
    with pytest.raises(ValueError, match="question 1"):
        vqa_score(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="no questions"):
        vqa_score([], [])


# --- classifier-head helpers

TRAIN = [["Yes", "yes", "no"], ["red", "Red.", "blue"], ["no", "the"], ["blue"]]


def test_answer_vocabulary_is_ranked_and_deterministic() -> None:
    # counts: yes 2, no 2, red 2, blue 2 -> ties broken alphabetically; "the" -> "" is dropped.
    assert answer_vocabulary(TRAIN) == ["blue", "no", "red", "yes"]
    assert answer_vocabulary(list(reversed(TRAIN))) == ["blue", "no", "red", "yes"]
    assert answer_vocabulary([["y", "x", "x"], ["z"]]) == ["x", "y", "z"]
    assert answer_vocabulary([["y", "x", "x"], ["z"]], top_k=2) == ["x", "y"]
    assert answer_vocabulary([["y", "x", "x"], ["z"]], min_count=2) == ["x"]
    with pytest.raises(ValueError):
        answer_vocabulary(TRAIN, top_k=0)


def test_soft_targets() -> None:
    vocab = ["yes", "no", "2", "red"]
    answers = ["yes"] * 5 + ["Two", "two"] + ["no"] + ["purple"] * 2
    expected = [(0, 1.0), (1, 1 / 3), (2, 2 / 3)]  # min(1, count / 3), no leave-one-out
    assert soft_targets(answers, vocab) == expected
    assert soft_targets(answers, vocab_index(vocab)) == expected
    assert soft_targets(["purple"], vocab) == []
    with pytest.raises(ValueError, match="duplicate"):
        vocab_index(["yes", "no", "yes"])


def test_majority_answer_baseline() -> None:
    train = [["yes"] * 10, ["yes"] * 6 + ["no"] * 4, ["2"] * 10]  # yes 16, 2 10, no 4
    test = [["yes"] * 10, ["no"] * 10, ["yes"] * 2 + ["no"] * 8, ["2"] * 10]
    result = majority_answer_baseline(train, test, ["yes/no", "yes/no", "yes/no", "number"])
    assert result["answer"] == "yes"
    # per question: 1, 0, 2 matches (leave-one-out: 8 x 2/3 + 2 x 1/3) / 10 = 0.6, 0
    assert result["accuracy"] == pytest.approx((1.0 + 0.0 + 0.6 + 0.0) / 4)
    assert result["accuracy/yes/no"] == pytest.approx(1.6 / 3)
    assert result["n"] == 4 and result["n/number"] == 1


# --- visual entailment and VCR


def test_accuracy_with_per_class_breakdown() -> None:
    gold = [0, 0, 1, 1, 2, 2]
    pred = np.array([0, 1, 1, 1, 0, 2])
    result = accuracy(pred, gold, labels=["entailment", "neutral", "contradiction", "other"])
    assert result["accuracy"] == pytest.approx(4 / 6) and result["n"] == 6
    assert result["accuracy/entailment"] == 0.5 and result["n/entailment"] == 2
    assert result["accuracy/neutral"] == 1.0
    assert result["accuracy/contradiction"] == 0.5
    assert math.isnan(result["accuracy/other"]) and result["n/other"] == 0
    assert set(accuracy(pred, gold)) == {"accuracy", "n"}


def test_accuracy_validates_input() -> None:
    with pytest.raises(ValueError, match="3 classification predictions but 2"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="no name"):
        accuracy([0, 3], [0, 1], labels=["a", "b"])
    with pytest.raises(TypeError):
        accuracy([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="no classification items"):
        accuracy([], [])


def test_vcr_scores_joint_is_per_item() -> None:
    # items: both right, answer only, rationale only, neither
    result = vcr_scores([0, 1, 2, 3], [0, 1, 0, 0], [3, 0, 1, 2], [3, 1, 1, 0])
    assert result == {"q2a": 0.5, "qa2r": 0.5, "q2ar": 0.25, "n": 4}
    # The joint is not the product of marginals: right answers and rationales on different items.
    result = vcr_scores([0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0])
    assert result["q2a"] == 0.5 and result["qa2r"] == 0.5 and result["q2ar"] == 0.0
    with pytest.raises(ValueError, match="rationale items"):
        vcr_scores([0, 1], [0, 1], [0], [0])


def test_chance_levels() -> None:
    assert chance_level("ve") == {"accuracy": pytest.approx(1 / 3)}
    assert chance_level("VCR") == {"q2a": 0.25, "qa2r": 0.25, "q2ar": 1 / 16}
    assert chance_level("vcr", num_choices=2)["q2ar"] == 0.25
    with pytest.raises(ValueError, match="majority_answer_baseline"):
        chance_level("vqa")
    with pytest.raises(ValueError, match="unknown task"):
        chance_level("gqa")
