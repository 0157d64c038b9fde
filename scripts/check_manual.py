"""Rule check_manual: check gated data placed by hand and record what was found."""

from vldistill.data.download import check_placed
from vldistill.io import write_json
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads):
    p = smk.params
    summary = check_placed(p.path, p.what, p.request, expect=p.min_files)
    write_json({"name": smk.wildcards.name, "what": p.what, **summary}, smk.output[0])
