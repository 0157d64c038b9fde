"""Rule student_pretrain: VL pre-training of the student (see stages/student). The rule's params
(student, training, objective, validation, compute, init) reach the stage by name."""

from pathlib import Path

from vldistill.stages.student import pretrain_student
from vldistill.train.distributed import run_training_rule
from vldistill.workflow import rule_settings

smk = snakemake  # noqa: F821 (injected by Snakemake)

run_training_rule(
    smk,
    pretrain_student,
    **rule_settings(smk),
    root=Path("data") / smk.wildcards.dataset,
    seed=int(smk.wildcards.sseed),
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
)
