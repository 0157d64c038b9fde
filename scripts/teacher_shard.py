"""Rule teacher_shard: encode one shard of images or texts with a teacher (see stages/teacher)."""

from pathlib import Path

from vldistill.stages.teacher import cache_teacher_shard, image_items, text_items
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)
wc = smk.wildcards

with rule_logging(smk.log[0], smk.threads):
    if wc.teacher != smk.params.teacher["name"]:
        raise ValueError(
            f"requested {wc.modality} features of teacher {wc.teacher!r} but the config's "
            f"teachers.{wc.modality}.name is {smk.params.teacher['name']!r}"
        )
    if wc.modality == "vision":
        items = image_items(Path(smk.input.images).parent, list(smk.input.manifests),
                            smk.params.frames)
    else:
        items = text_items(smk.input.corpus)
    cache_teacher_shard(
        modality=wc.modality,
        teacher=smk.params.teacher,
        features=smk.params.features,
        items=items,
        shard=int(wc.shard),
        n_shards=int(wc.n),
        out_path=smk.output.shard,
        stats_path=smk.output.stats,
        frames=smk.params.frames,
    )
