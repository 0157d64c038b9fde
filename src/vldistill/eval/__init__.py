"""Task metrics: official VQA v2 accuracy, visual entailment accuracy and VCR scores."""

from vldistill.eval.classification import accuracy, chance_level, vcr_scores
from vldistill.eval.vqa import (
    answer_vocabulary,
    majority_answer_baseline,
    official_normalize_answer,
    soft_targets,
    vocab_index,
    vqa_accuracy,
    vqa_score,
)

__all__ = [
    "accuracy",
    "answer_vocabulary",
    "chance_level",
    "majority_answer_baseline",
    "official_normalize_answer",
    "soft_targets",
    "vcr_scores",
    "vocab_index",
    "vqa_accuracy",
    "vqa_score",
]
