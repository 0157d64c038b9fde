"""Rule student_task_agnostic: one task-agnostic student (see stages/student, distill/agnostic)."""

from pathlib import Path

from vldistill.stages.student import agnostic_student
from vldistill.train.distributed import run_training_rule

smk = snakemake  # noqa: F821 (injected by Snakemake)

run_training_rule(
    smk,
    agnostic_student,
    root=Path("data") / smk.wildcards.dataset,
    pretrained=smk.input.pretrained,
    variant=smk.wildcards.variant,
    vision_index=smk.input.get("vision"),
    text_index=smk.input.get("text"),
    training=smk.params.training,
    distill=smk.params.distill,
    objective=smk.params.objective,
    seed=int(smk.wildcards.sseed),
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
    compute=smk.params.compute,
)
