"""A closed-form ridge map between the teachers' text and image embeddings: what a linear
read-out of what the unimodal teachers already know retrieves, with no student at all.

Embeddings are L2-normalised and centred on the training pairs' means; the map is
W = (X'X + lambda * s * I)^-1 X'Y with s the mean eigenvalue of X'X, so one lambda grid fits any
embedding width. A text -> image map scores cos(t W, v); an image -> text map scores
cos(t, v W). The direction and lambda are chosen on val.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vldistill.eval.retrieval import retrieval_metrics

LAMBDAS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
MAP_DIRECTIONS: tuple[str, ...] = ("text_to_image", "image_to_text")


@dataclass
class RidgeMap:
    """A fitted map between text and image embeddings, and the centring it was fitted with."""

    direction: str
    lam: float
    w: torch.Tensor  # [D_source, D_target]
    text_mean: torch.Tensor
    image_mean: torch.Tensor

    def scores(self, texts: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """[Q, G] cosine scores of Q query texts against G gallery images."""
        t = F.normalize(texts.double(), dim=-1) - self.text_mean
        v = F.normalize(images.double(), dim=-1) - self.image_mean
        if self.direction == "text_to_image":
            t = t @ self.w
        else:
            v = v @ self.w
        return F.normalize(t, dim=-1) @ F.normalize(v, dim=-1).T


def fit_ridge(texts: torch.Tensor, images: torch.Tensor, direction: str,
              lam: float) -> RidgeMap:
    """Fit on paired rows (text i describes image i): [N, D_text] and [N, D_image]."""
    if direction not in MAP_DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {MAP_DIRECTIONS}")
    if len(texts) != len(images) or len(texts) == 0:
        raise ValueError(f"need the same positive number of texts and images, got "
                         f"{len(texts)} and {len(images)}")
    t, v = F.normalize(texts.double(), dim=-1), F.normalize(images.double(), dim=-1)
    text_mean, image_mean = t.mean(dim=0), v.mean(dim=0)
    t, v = t - text_mean, v - image_mean
    x, y = (t, v) if direction == "text_to_image" else (v, t)
    gram = x.T @ x
    scale = gram.trace() / len(gram)
    identity = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    w = torch.linalg.solve(gram + lam * scale * identity, x.T @ y)
    return RidgeMap(direction, lam, w, text_mean, image_mean)


def val_score(metrics: dict[str, float]) -> tuple[float, float]:
    """What val maximises: the mean of R@1/5/10, then the lower median rank."""
    return (metrics["R@1"] + metrics["R@5"] + metrics["R@10"]) / 3, -metrics["median_rank"]


def choose_ridge(train_texts: torch.Tensor, train_images: torch.Tensor,
                 val_texts: torch.Tensor, val_images: torch.Tensor, val_gold: torch.Tensor
                 ) -> tuple[RidgeMap, dict[str, dict[str, float]]]:
    """Fit every (direction, lambda) on the training pairs and keep the best on val's text ->
    image retrieval (the first of equals); returns it and every candidate's val metrics."""
    best, best_score, table = None, None, {}
    for direction in MAP_DIRECTIONS:
        for lam in LAMBDAS:
            ridge = fit_ridge(train_texts, train_images, direction, lam)
            metrics = retrieval_metrics(ridge.scores(val_texts, val_images), val_gold)
            table[f"{direction}/lambda={lam:g}"] = metrics
            if best_score is None or val_score(metrics) > best_score:
                best, best_score = ridge, val_score(metrics)
    return best, table
