"""The teacher's task head for confidence weighting: a linear probe on cached teacher features.

Where the teacher is not image-text aligned (the packaged EfficientNet + MiniLM pair), MAD's
confidence w = p_teacher(gold) comes from a linear probe fitted on the regime's *training* split
only (never val/test), over [image global ; text global]. Two shapes:

* classification (VQA answers, VE labels): X [N, F] -> K logits;
* multiple choice (VCR): X [N, C, F] -> one score per candidate, softmax over the C candidates.

Fitted full-batch with L-BFGS and an L2 penalty: deterministic for fixed inputs, and seconds
for the tens of thousands of examples of a low-shot or synthetic regime.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LinearProbe:
    weight: torch.Tensor  # [F, K] (classification) or [F, 1] (multiple choice)
    bias: torch.Tensor  # [K] or [1]
    mean: torch.Tensor  # feature standardisation fitted on the training features
    std: torch.Tensor
    train_loss: float  # mean cross-entropy on the training data (AF compares against it)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.mean) / self.std
        out = x @ self.weight + self.bias
        return out.squeeze(-1) if out.shape[-1] == 1 and x.ndim == 3 else out

    def p_gold(self, features: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        """The probe's probability of each example's gold label (or gold candidate)."""
        probs = torch.softmax(self.logits(features), dim=-1)
        return probs.gather(1, gold.long()[:, None]).squeeze(1)


def fit_probe(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None,
              l2: float = 1e-3, max_iter: int = 50) -> LinearProbe:
    """Fit on [N, F] with labels in [0, K) (classification) or [N, C, F] with the gold index."""
    if features.ndim not in (2, 3) or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(f"need features [N, F] or [N, C, F] and N labels, got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    x = features.float()
    flat = x.reshape(-1, x.shape[-1])
    mean, std = flat.mean(dim=0), flat.std(dim=0).clamp(min=1e-6)
    x = (x - mean) / std
    labels = labels.long()
    out_dim = 1 if x.ndim == 3 else (n_classes or int(labels.max()) + 1)
    if x.ndim == 2 and int(labels.max()) >= out_dim:
        raise ValueError(f"label {int(labels.max())} out of range for {out_dim} classes")
    weight = torch.zeros(x.shape[-1], out_dim, requires_grad=True)
    bias = torch.zeros(out_dim, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ weight + bias
        if x.ndim == 3:
            logits = logits.squeeze(-1)
        loss = F.cross_entropy(logits, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    with torch.no_grad():
        logits = x @ weight + bias
        logits = logits.squeeze(-1) if x.ndim == 3 else logits
        train_loss = F.cross_entropy(logits, labels).item()
    return LinearProbe(weight.detach(), bias.detach(), mean, std, train_loss)


def cross_fitted_p_gold(features: torch.Tensor, labels: torch.Tensor,
                        n_classes: int | None = None, folds: int = 5,
                        seed: int = 0) -> tuple[torch.Tensor, float]:
    """Out-of-fold p_teacher(gold) for every training example, and the out-of-fold loss.

    A probe scored on the examples it was fitted on is over-confident (with more feature
    dimensions than examples, as in a low-shot regime, it memorises them), which would make every
    confidence weight ~1 and the AF reference loss ~0. Each fold's probabilities come from a probe
    fitted on the other folds, all inside the regime's training split.
    """
    n = len(labels)
    folds = max(2, min(folds, n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    p_gold = torch.empty(n)
    for fold in range(folds):
        held = order[fold::folds]
        kept = torch.ones(n, dtype=torch.bool)
        kept[held] = False
        probe = fit_probe(features[kept], labels[kept], n_classes=n_classes)
        p_gold[held] = probe.p_gold(features[held], labels[held])
    loss = float(-torch.log(p_gold.clamp(min=1e-12)).mean())
    return p_gold, loss
