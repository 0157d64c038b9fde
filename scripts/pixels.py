"""Rule pixels: one split's images decoded once into a uint8 array file (data/pixels.py)."""

from pathlib import Path

from vldistill.data.pixels import write_pixel_file
from vldistill.workflow import rule_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(smk.log[0], smk.threads) as log:
    root = Path(smk.output.pixels).parent.parent
    record = write_pixel_file(root, smk.wildcards.split, smk.params.image_size,
                              smk.params.frames)
    log.info("%s: uint8 %s (%d px, %d frame(s))", smk.wildcards.split, record["shape"],
             record["size"], record["frames"])
