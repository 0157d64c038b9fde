"""The Fast model's losses, both over one batch of B aligned (image i, caption i) pairs.

* ``info_nce``: symmetric InfoNCE on the cosine similarities f(x_i).g(y_j) / tau_f, image ->
  text and text -> image, the positive of row i being column i (and any other text true of
  image i). Also pre-training's image-text contrastive loss (ITC). Optionally the captions' hard
  negatives join the image -> text softmax as extra wrong texts (NegCLIP, Yuksekgonul et al.,
  ICLR 2023): without them nothing in the batch asks a dual encoder to tell "moves left and then
  pauses" from "pauses and then moves right".
* ``slow_to_fast_kl``: distillation from the Slow model. Per image x_i, the Slow model's
  distribution over the batch's captions q_i = softmax_j(h_slow(x_i, y_j) / tau_s) is the target
  for the Fast model's p_i = softmax_j(f(x_i).g(y_j) / tau_f): KL(q_i || p_i), averaged over rows;
  the same per caption over the batch's images (columns); the two directions averaged.

L_fast_distilled = info_nce + alpha * slow_to_fast_kl. With q = p the KL term is exactly 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(similarity: torch.Tensor, temperature: float,
             hard_negatives: torch.Tensor | None = None,
             positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE on a [B, B] cosine-similarity matrix (rows: images, columns: texts).

    ``hard_negatives`` [B, M]: the images' similarities to M extra texts that are no image's
    positive (the batch captions' hard negatives), appended to the image -> text softmax only,
    as they are not queries; an entry of -inf leaves that text out for that image (a negative
    that happens to be true of it). ``positives`` [B, B] bool (image i, text j): texts true of
    several images in the batch (a caption that fits another scene too) are a positive of each,
    the target mass split evenly over a row's positives; default: the diagonal only."""
    _check_square(similarity)
    logits = similarity / temperature
    if positives is None:
        positives = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    if positives.shape != logits.shape:
        raise ValueError("positives must be a [B, B] bool matrix with a true diagonal")
    # checked on the device: a host sync per step would stall a GPU
    torch._assert_async(positives.diagonal().all(), "positives must have a true diagonal")
    image_to_text = logits
    row_targets = positives.to(logits.dtype)
    if hard_negatives is not None:
        if hard_negatives.ndim != 2 or hard_negatives.shape[0] != len(logits):
            raise ValueError(f"hard negatives must be [{len(logits)}, M], got "
                             f"{tuple(hard_negatives.shape)}")
        image_to_text = torch.cat([logits, hard_negatives / temperature], dim=1)
        row_targets = F.pad(row_targets, (0, hard_negatives.shape[1]))
    return 0.5 * (_soft_cross_entropy(image_to_text, row_targets)
                  + _soft_cross_entropy(logits.T, positives.T.to(logits.dtype)))


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j t_ij log softmax_j, with each row's targets normalised to 1; an
    entry of -inf (left out) has target 0 and adds nothing."""
    targets = targets / targets.sum(dim=1, keepdim=True)
    log_p = logits.log_softmax(dim=1).masked_fill(targets == 0, 0.0)
    return -(targets * log_p).sum(dim=1).mean()


KL_DIRECTIONS: tuple[str, ...] = ("i2t", "t2i")


def slow_to_fast_kl(fast_similarity: torch.Tensor, slow_scores: torch.Tensor,
                    tau_fast: float, tau_slow: float,
                    directions: tuple[str, ...] = KL_DIRECTIONS) -> torch.Tensor:
    """KL(q || p) averaged over ``directions``: ``i2t`` per image over the batch's captions
    (rows), ``t2i`` per caption over the batch's images (columns). ``slow_scores`` [B, B]
    h_slow(x_i, y_j) (no gradient)."""
    _check_square(fast_similarity)
    if slow_scores.shape != fast_similarity.shape:
        raise ValueError(f"slow scores {tuple(slow_scores.shape)} do not match the fast "
                         f"similarities {tuple(fast_similarity.shape)}")
    if not directions or set(directions) - set(KL_DIRECTIONS):
        raise ValueError(f"directions must be a non-empty subset of {KL_DIRECTIONS}, got "
                         f"{directions}")
    slow = slow_scores.detach().to(fast_similarity.dtype) / tau_slow
    fast = fast_similarity / tau_fast
    pairs = {"i2t": (fast, slow), "t2i": (fast.T, slow.T)}
    kls = [F.kl_div(F.log_softmax(pairs[d][0], dim=1), F.log_softmax(pairs[d][1], dim=1),
                    log_target=True, reduction="batchmean") for d in directions]
    return sum(kls) / len(kls)


def _check_square(matrix: torch.Tensor) -> None:
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a [B, B] in-batch matrix, got {tuple(matrix.shape)}")
