"""What a retrieval model is evaluated on: a split's images as the gallery, each image's most
specific captions as text queries (retrieval/queries.py), and the gallery's Fast embeddings or
Slow pyramids computed batch by batch, as an index would be built offline."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch

from vldistill.data.images import PixelBank
from vldistill.data.manifest import manifest_path, read_manifest
from vldistill.data.pixels import open_visual_bank
from vldistill.data.video import ClipBank
from vldistill.models.config import StudentConfig
from vldistill.models.fast import FastDualEncoder
from vldistill.models.student import Student
from vldistill.models.tokenizer import Tokenizer, trim_padding
from vldistill.retrieval.queries import select_queries


@dataclass
class RetrievalSet:
    """A gallery (the split's images, bank row = gallery id) and its text queries."""

    bank: PixelBank  # images, or clips for a video dataset
    ids: torch.Tensor  # [Q, L]
    mask: torch.Tensor  # [Q, L]
    gold: torch.Tensor  # [Q] gallery id of each query's image
    # [Q] gallery images the query is true of (>= 1: its own; data/truth.py)
    same_caption: torch.Tensor
    # each query's hard negative (the query itself where it has none) and whether it has one
    negative_ids: torch.Tensor  # [Q, L]
    negative_mask: torch.Tensor  # [Q, L]
    has_negative: torch.Tensor  # [Q] bool
    query_ids: list[str] = field(default_factory=list)  # [Q] caption_id of each query

    @property
    def negative_queries(self) -> torch.Tensor:
        """Query rows that have a hard negative."""
        return self.has_negative.nonzero().flatten()

    @property
    def queried_images(self) -> torch.Tensor:
        """Gallery ids that have at least one query: the image -> text queries."""
        return torch.unique(self.gold)

    @property
    def image_to_text_gold(self) -> torch.Tensor:
        """[len(queried_images), Q] True where caption q describes that image."""
        return self.gold[None, :] == self.queried_images[:, None]


def retrieval_set(root: str | Path, split: str, captions_per_image: int, cfg: StudentConfig,
                  max_queries: int | None = None) -> RetrievalSet:
    """The split's images as the gallery; each image's ``captions_per_image`` most specific
    captions as queries (true of the fewest gallery images; manifest order among equals), or a
    fixed random ``max_queries`` of them (Slow scores every gallery image per query, so a large
    gallery needs a query subset to stay affordable). A generic caption ("three shapes on a
    light grey background") fits hundreds of images, so no model could find its image."""
    bank = open_visual_bank(root, [split], cfg.image_size, cfg.frames)
    context_length = cfg.context_length
    captions = read_manifest(manifest_path(root, split, "captions"), "captions")
    images = read_manifest(manifest_path(root, split, "images"), "images")
    images = images.join(pl.DataFrame({"image_id": bank.ids, "row": range(len(bank.ids))}),
                         on="image_id").sort("row")
    queries = select_queries(captions, images, captions_per_image, max_queries)
    tokenizer = Tokenizer(context_length)
    ids, mask = tokenizer(queries["caption"].to_list())
    negatives = queries.select(pl.col("hard_negative").fill_null(pl.col("caption")))
    negative_ids, negative_mask = tokenizer(negatives["hard_negative"].to_list())
    return RetrievalSet(bank, ids, mask, bank.rows(queries["image_id"].to_list()),
                        torch.tensor(queries["images"].to_list()), negative_ids, negative_mask,
                        torch.tensor(queries["hard_negative"].is_not_null().to_list(),
                                     dtype=torch.bool), queries["caption_id"].to_list())


GALLERY_BATCH = 256


@torch.no_grad()
def embed_gallery(model: FastDualEncoder, bank: PixelBank,
                  batch_size: int = GALLERY_BATCH) -> torch.Tensor:
    """[G, D] fp32 image embeddings, on the model's device (uint8 batches moved there)."""
    return torch.cat([model.encode_image(pixels).float()
                      for pixels in bank.batches(batch_size, device=model.device)])


@torch.no_grad()
def embed_queries(model: FastDualEncoder, ids: torch.Tensor, mask: torch.Tensor,
                  batch_size: int = 256) -> torch.Tensor:
    """[Q, D] fp32 text embeddings, on the model's device."""
    return torch.cat([model.encode_text(*trim_padding(ids[i:i + batch_size],
                                                      mask[i:i + batch_size],
                                                      device=model.device)).float()
                      for i in range(0, len(ids), batch_size)])


def middle_frame(data: RetrievalSet) -> RetrievalSet:
    """The same queries over still clips: each gallery clip's middle frame repeated over all
    its frame positions, what the towers see of a scene where nothing happens."""
    pixels = data.bank.pixels[torch.arange(len(data.bank))]  # in memory: a small gallery
    if pixels.dim() != 5:
        raise ValueError("a single-frame evaluation needs a video gallery")
    t = pixels.shape[1]
    still = pixels[:, t // 2:t // 2 + 1].expand(-1, t, -1, -1, -1).contiguous()
    return dataclasses.replace(data, bank=ClipBank(data.bank.ids, still))


@torch.no_grad()
def gallery_levels(slow: Student, bank: PixelBank, batch_size: int = 256) -> list[torch.Tensor]:
    """The Slow model's pyramid of every gallery image (computed once, offline, on the model's
    device), kept in host memory: at 224 px a pyramid is megabytes per image (gigabytes for a
    5,000-image gallery), and scoring moves only each block's rows to the device."""
    parts = [[level.cpu() for level in slow.encode_image(pixels).levels]
             for pixels in bank.batches(batch_size, device=slow.device)]
    return [torch.cat(level) for level in zip(*parts, strict=True)]
