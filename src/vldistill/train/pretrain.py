"""VL pre-training of the student on the caption corpus: image-text matching with hard negatives
plus bidirectional captioning. The checkpoint it produces is where every method starts.

ITM sees, per image, its caption (match), the caption's hard negative (a swapped attribute or
relation: no match) and the next image's caption in the batch (no match), so the student must
read word order and bindings, not just bags of words.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch
import torch.nn.functional as F

from vldistill.data.images import ImageBank
from vldistill.models.student import Student
from vldistill.models.text import TextOutput
from vldistill.models.tokenizer import Tokenizer, trim_padding
from vldistill.models.vision import VisionOutput


@dataclass
class CaptionCorpus:
    image_rows: torch.Tensor  # [N] row of each caption's image in the bank
    ids: torch.Tensor  # [N, L]
    mask: torch.Tensor  # [N, L]
    negative_ids: torch.Tensor  # [N, L] hard negatives (the caption itself where none exists)
    negative_mask: torch.Tensor
    has_negative: torch.Tensor  # [N] bool

    def __len__(self) -> int:
        return len(self.image_rows)


def build_caption_corpus(captions: pl.DataFrame, bank: ImageBank,
                         tokenizer: Tokenizer) -> CaptionCorpus:
    """Tokenise a captions manifest once; rows follow the manifest's order."""
    texts = captions["caption"].to_list()
    has_negative = captions["hard_negative"].is_not_null()
    negatives = [n if n is not None else c
                 for n, c in zip(captions["hard_negative"].to_list(), texts, strict=True)]
    ids, mask = tokenizer(texts)
    negative_ids, negative_mask = tokenizer(negatives)
    return CaptionCorpus(bank.rows(captions["image_id"].to_list()), ids, mask, negative_ids,
                         negative_mask, torch.tensor(has_negative.to_list(), dtype=torch.bool))


def caption_vocabulary(corpus: CaptionCorpus) -> list[int]:
    """Every BPE id the corpus's captions use: the decoder's closed output vocabulary."""
    ids = torch.cat([corpus.ids[corpus.mask], corpus.negative_ids[corpus.negative_mask]])
    return ids.unique().tolist()


def _roll(text: TextOutput) -> TextOutput:
    return TextOutput(tokens=text.tokens.roll(1, dims=0), pooled=text.pooled.roll(1, dims=0))


def encode_captions(model: Student, corpus: CaptionCorpus, bank: ImageBank,
                    rows: torch.Tensor) -> tuple[VisionOutput, TextOutput]:
    """The student's image and caption encodings of a batch, shared by every loss on it."""
    vision = model.encode_image(bank.at(corpus.image_rows[rows]))
    return vision, model.encode_text(*caption_batch(corpus, rows))


def caption_batch(corpus: CaptionCorpus, rows: torch.Tensor,
                  negatives: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of the rows' captions (or their hard negatives), trimmed to the longest."""
    if negatives:
        return trim_padding(corpus.negative_ids[rows], corpus.negative_mask[rows])
    return trim_padding(corpus.ids[rows], corpus.mask[rows])


def pretrain_loss(model: Student, corpus: CaptionCorpus, bank: ImageBank, rows: torch.Tensor,
                  itm_weight: float = 1.0, caption_weight: float = 1.0,
                  encoded: tuple[VisionOutput, TextOutput] | None = None,
                  ) -> dict[str, torch.Tensor]:
    """ITM + captioning of a batch; ``encoded`` reuses encodings another loss already made."""
    vision, text = encoded or encode_captions(model, corpus, bank, rows)
    ids, mask = caption_batch(corpus, rows)
    caption = model.caption_loss_from_levels(vision.levels, ids, mask)

    negative_ids, negative_mask = caption_batch(corpus, rows, negatives=True)
    negative = model.encode_text(negative_ids, negative_mask)
    has_negative = corpus.has_negative[rows]
    logits = [
        model.heads("itm", model.fuse(vision, text, mask).pooled),
        model.heads("itm", model.fuse(vision, negative, negative_mask).pooled),
        model.heads("itm", model.fuse(vision, _roll(text), mask.roll(1, dims=0)).pooled),
    ]
    labels = [torch.ones(len(rows)), torch.zeros(len(rows)), torch.zeros(len(rows))]
    # a caption without a hard negative would be its own "negative": leave those pairs out
    keep = [torch.ones_like(has_negative), has_negative, torch.ones_like(has_negative)]
    all_logits = torch.cat([lg[k] for lg, k in zip(logits, keep, strict=True)])
    all_labels = torch.cat([lb[k] for lb, k in zip(labels, keep, strict=True)]).long()
    itm = F.cross_entropy(all_logits, all_labels)
    with torch.no_grad():
        hard_accuracy = (logits[0][:, 1] - logits[0][:, 0] > logits[1][:, 1] - logits[1][:, 0])
        hard_accuracy = hard_accuracy[has_negative].float().mean()
    return {
        "loss": itm_weight * itm + caption_weight * caption,
        "itm": itm.detach(),
        "caption": caption.detach(),
        "itm_hard_negative_accuracy": hard_accuracy,
    }
