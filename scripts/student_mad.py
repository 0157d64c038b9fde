"""Rule student_mad: task-agnostic MAD on the caption corpus (see stages/student)."""

from pathlib import Path

from vldistill.stages.student import mad_student
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads):
    mad_student(
        root=Path("data") / smk.wildcards.dataset,
        pretrained=smk.input.pretrained,
        vision_index=smk.input.vision,
        text_index=smk.input.text,
        training=smk.params.training,
        mad=smk.params.distill,
        seed=smk.params.seed,
        out_path=smk.output.model,
        metrics_path=smk.output.metrics,
    )
