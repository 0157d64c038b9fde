"""The task-agnostic students the fine-tuning methods start from, all at one budget.

After pre-training, every student gets the same number of task-agnostic steps on the same
captions (the MAD stage's budget); only what is distilled differs. ``plain`` continues the
pre-training objective without a teacher, so the baseline and kd have spent exactly what MAD
has; ``mad`` adds token-selected distillation; ``mad-ts`` distils every token (the TS ablation
leaves token selection out of every stage it touches). The fused-state targets (``fused``)
apply here as in fine-tuning, so the cross-modal encoder is distilled in both. Confidence
weighting and AF need labels and exist only in fine-tuning, so their ablations start from MAD's
student.
"""

from __future__ import annotations

from vldistill.distill.mad import MadConfig
from vldistill.distill.methods import AGNOSTIC_START, AGNOSTIC_VARIANTS

__all__ = ["AF_KEYS", "AGNOSTIC_START", "AGNOSTIC_VARIANTS", "agnostic_config"]

AF_KEYS: tuple[str, ...] = ("ema", "af_every", "af_examples")


def agnostic_config(variant: str, **distill: float) -> MadConfig | None:
    """The distillation of a task-agnostic variant; None for ``plain``. No labels exist here,
    so there is no confidence weighting and no adaptive lambda."""
    if variant not in AGNOSTIC_VARIANTS:
        raise ValueError(f"unknown task-agnostic variant {variant!r}; expected one of "
                         f"{AGNOSTIC_VARIANTS}")
    if variant == "plain":
        return None
    # AF's keys pace the adaptive lambda of fine-tuning; they have no meaning here
    distill = {k: v for k, v in distill.items() if k not in AF_KEYS}
    return MadConfig(token_selection=variant == "mad", confidence_weighting=False,
                     adaptive=False, **distill)
