"""The names of the fine-tuning methods and of the task-agnostic students they start from.

Torch-free on purpose: the workflow reads these at DAG time (wildcard constraints, input
paths), and every dry run would otherwise pay for importing torch.
"""

from __future__ import annotations

METHODS: tuple[str, ...] = ("baseline", "kd", "mad", "mad-ts", "mad-cw", "mad-af")

# baseline and kd start from ``plain`` (the same task-agnostic steps, no teacher); the TS
# ablation leaves token selection out of its task-agnostic stage too; confidence weighting and
# AF need labels, so their ablations start from MAD's student.
AGNOSTIC_VARIANTS: tuple[str, ...] = ("plain", "mad", "mad-ts")
AGNOSTIC_START: dict[str, str] = {
    "baseline": "plain", "kd": "plain", "mad": "mad", "mad-ts": "mad-ts", "mad-cw": "mad",
    "mad-af": "mad",
}
assert set(AGNOSTIC_START) == set(METHODS)
assert set(AGNOSTIC_START.values()) == set(AGNOSTIC_VARIANTS)
