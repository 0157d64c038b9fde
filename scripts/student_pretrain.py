"""Rule student_pretrain: VL pre-training of the student (see stages/student)."""

from pathlib import Path

from vldistill.stages.student import pretrain_student
from vldistill.train.distributed import run_training_rule

smk = snakemake  # noqa: F821 (injected by Snakemake)

run_training_rule(
    smk,
    pretrain_student,
    root=Path(smk.input.images).parent,
    student=smk.params.student,
    training=smk.params.training,
    objective=smk.params.objective,
    validation=smk.params.validation,
    seed=int(smk.wildcards.sseed),
    out_path=smk.output.model,
    metrics_path=smk.output.metrics,
    compute=smk.params.compute,
    init=smk.params.get("init"),
)
