"""Loaders for real datasets in their official formats, ending in the manifest schema.

Each loader reads official annotation files and returns ``{split: {table: DataFrame}}``
conforming to ``manifest.SCHEMAS``; ``combine`` merges several loaders' results (images
deduplicated) and ``write_dataset`` writes every manifest, after which ``validate_dataset``
checks every example as it does for the synthetic data.
"""

from __future__ import annotations

from collections.abc import Callable

from vldistill.data.formats.dataset import (
    Tables,
    combine,
    images_in_several_splits,
    merge_images,
    write_dataset,
)
from vldistill.data.formats.karpathy import KARPATHY_SPLITS, load_karpathy
from vldistill.data.formats.snli_ve import SNLI_VE_SPLITS, load_snli_ve
from vldistill.data.formats.splits import FormatError, SplitRule, by_image
from vldistill.data.formats.vatex import VATEX_SPLITS, load_vatex, missing_clips, require_clips
from vldistill.data.formats.vcr import VCR_SPLITS, load_vcr
from vldistill.data.formats.vqa_v2 import VQA_V2_SPLITS, load_vqa_v2

# Format name -> loader; the integrator selects one per dataset config.
LOADERS: dict[str, Callable[..., Tables]] = {
    "karpathy": load_karpathy,
    "vqa_v2": load_vqa_v2,
    "snli_ve": load_snli_ve,
    "vcr": load_vcr,
    "vatex": load_vatex,
}
# Format name -> its default {official split: rule}, the ``splits`` argument's default.
DEFAULT_SPLITS: dict[str, dict[str, SplitRule]] = {
    "karpathy": KARPATHY_SPLITS,
    "vqa_v2": VQA_V2_SPLITS,
    "snli_ve": SNLI_VE_SPLITS,
    "vcr": VCR_SPLITS,
    "vatex": VATEX_SPLITS,
}

__all__ = [
    "DEFAULT_SPLITS",
    "KARPATHY_SPLITS",
    "LOADERS",
    "FormatError",
    "SNLI_VE_SPLITS",
    "SplitRule",
    "VATEX_SPLITS",
    "VCR_SPLITS",
    "VQA_V2_SPLITS",
    "Tables",
    "by_image",
    "combine",
    "images_in_several_splits",
    "load_karpathy",
    "load_snli_ve",
    "load_vatex",
    "load_vcr",
    "load_vqa_v2",
    "merge_images",
    "missing_clips",
    "require_clips",
    "write_dataset",
]
