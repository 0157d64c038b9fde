"""Rule student_task_agnostic: one task-agnostic student (see stages/student, distill/agnostic).
The rule's params (training, distill, objective, compute) reach the stage by name."""

from pathlib import Path

from vldistill.stages.student import agnostic_student
from vldistill.train.distributed import run_training_rule
from vldistill.workflow import rule_settings

smk = snakemake  # noqa: F821 (injected by Snakemake)

run_training_rule(
    smk,
    agnostic_student,
    **rule_settings(smk),
    root=Path("data") / smk.wildcards.dataset,
    pretrained=smk.input.pretrained,
    variant=smk.wildcards.variant,
    vision_index=smk.input.get("vision"),
    text_index=smk.input.get("text"),
    seed=int(smk.wildcards.sseed),
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
)
