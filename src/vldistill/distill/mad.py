"""Multimodal Adaptive Distillation (MAD) losses, as this project formulates it (docs/design.md).

Teacher tokens t_i with salience a_i, teacher global g; student states s_i, projections P:

* token selection (TS): a_i = softmax_i(cos(g, t_i) / tau) over the teacher's real tokens; keep
  the top ``token_ratio`` of them per instance. Without TS every real token counts, uniformly.
* L_tok = sum_{i in S} a_i (1 - cos(P s_i, t_i)) / sum_{i in S} a_i, per instance, for vision
  and text; student grids and sequences are first resampled onto the teacher's.
* L_glob = 1 - cos(P s_cls, g), for the image and for the text (summed), in every distilling
  method (it is part of L in docs/design.md).
* confidence weighting (CW): w = the teacher's probability of the gold label, normalised to mean 1
  over the batch; without CW, w = 1. A zero-confidence example contributes no distillation loss.
* fused-state distillation (``fused``): the cross-modal encoder itself, not only the towers,
  is pulled towards the teachers. ``tokens``: L_ftok = L_tok between P_f s^fused_i (the fusion's
  output text states) and the text teacher's tokens, with the text salience and selection;
  ``pooled``: L_fglob = 1 - cos(P_fg s^fused_pool, [g_v / |g_v| ; g_t / |g_t|]), the fused
  pooled state against both teachers' global embeddings side by side (it has seen the image and
  the text); ``both``; ``none`` (towers only).
* adaptive finetuning (AF), with like compared with like on held-out data: every ``af_every``
  fine-tuning steps (from step 0), the student's gold-label cross-entropy on up to
  ``af_examples`` val examples, l_k (the loss form of the probe's out-of-fold CE: softmax CE of
  the gold class, for VQA the most common gold answer), is smoothed as
  m_k = ema * m_{k-1} + (1 - ema) * l_k (m_0 = l_0), and
  lambda = lambda0 * min(1, m_k / L_probe), L_probe the teacher probe's out-of-fold CE on the
  regime's training split. Full strength while the student is worse than the teacher's probe,
  decaying in proportion as it overtakes it; lambda holds between updates. Without AF,
  lambda = lambda0.
* L = L_task + lambda(t) * w * (L_tok_vision + L_tok_text + L_glob [+ L_ftok] [+ L_fglob]),
  averaged over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vldistill.distill.methods import METHODS

FUSED: tuple[str, ...] = ("none", "tokens", "pooled", "both")


@dataclass(frozen=True)
class MadConfig:
    token_selection: bool = True
    confidence_weighting: bool = True
    adaptive: bool = True
    token_ratio: float = 0.5  # fraction of teacher tokens kept by TS
    tau: float = 0.1  # salience temperature
    lambda0: float = 1.0
    fused: str = "none"  # fused-state targets: none | tokens | pooled | both
    ema: float = 0.5  # smoothing of the student's held-out loss across AF updates
    af_every: int = 10  # fine-tuning steps between AF updates
    af_examples: int = 256  # val examples the student's held-out loss is measured on

    @property
    def fused_tokens(self) -> bool:
        return self.fused in ("tokens", "both")

    @property
    def fused_pooled(self) -> bool:
        return self.fused in ("pooled", "both")

    def __post_init__(self) -> None:
        if self.fused not in FUSED:
            raise ValueError(f"fused must be one of {FUSED}, got {self.fused!r}")
        if self.af_every < 1 or self.af_examples < 1:
            raise ValueError(f"af_every and af_examples must be >= 1, got {self.af_every}, "
                             f"{self.af_examples}")
        if not 0 < self.token_ratio <= 1:
            raise ValueError(f"token_ratio must be in (0, 1], got {self.token_ratio}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")


def method_config(method: str, **overrides: float) -> MadConfig | None:
    """The distillation set-up of a compared method; None for ``baseline`` (no teacher)."""
    switches = {
        "baseline": None,
        "kd": dict(token_selection=False, confidence_weighting=False, adaptive=False),
        "mad": dict(),
        "mad-ts": dict(token_selection=False),
        "mad-cw": dict(confidence_weighting=False),
        "mad-af": dict(adaptive=False),
    }
    if method not in switches:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if switches[method] is None:
        return None
    return MadConfig(**{**switches[method], **overrides})


def salience(teacher_global: torch.Tensor, teacher_tokens: torch.Tensor, mask: torch.Tensor,
             tau: float) -> torch.Tensor:
    """a_i = softmax over real tokens of cos(g, t_i) / tau; [B, T], zero on padding."""
    cos = F.cosine_similarity(teacher_tokens, teacher_global[:, None, :], dim=-1)
    logits = (cos / tau).masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1).nan_to_num(0.0)  # an all-padding row gives zeros


def select_tokens(scores: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean [B, T]: per row, the top ceil(ratio * n_real) real tokens by score."""
    n_real = mask.sum(dim=1)
    k = torch.clamp(torch.ceil(n_real * ratio), min=1).long()
    k = torch.minimum(k, n_real)
    order = scores.masked_fill(~mask, float("-inf")).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < k[:, None]) & mask


def resample_grid(tokens: torch.Tensor, grid: tuple[int, int],
                  target: tuple[int, int]) -> torch.Tensor:
    """Student image tokens [B, h*w, D] onto the teacher grid [B, H*W, D] (area or bilinear)."""
    b, n, d = tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} tokens do not form a {grid[0]}x{grid[1]} grid")
    if tuple(grid) == tuple(target):
        return tokens
    image = tokens.transpose(1, 2).reshape(b, d, grid[0], grid[1])
    if grid[0] >= target[0] and grid[1] >= target[1]:
        image = F.adaptive_avg_pool2d(image, target)  # averaging is the faithful downsample
    else:
        image = F.interpolate(image, size=target, mode="bilinear", align_corners=False)
    return image.flatten(2).transpose(1, 2)


def resample_sequence(tokens: torch.Tensor, mask: torch.Tensor,
                      target_mask: torch.Tensor) -> torch.Tensor:
    """Student text states [B, Ls, D] onto the teacher's token positions [B, Lt, D].

    The tokenizers differ (BPE vs WordPiece), so there is no 1:1 token map; teacher position j of
    n_t real tokens takes the student's state at the same relative position, floor(j * n_s / n_t).
    Both sequences start with a start token and end with an end token, so ends map to ends.
    """
    n_s = mask.sum(dim=1, keepdim=True).clamp(min=1)
    n_t = target_mask.sum(dim=1, keepdim=True).clamp(min=1)
    positions = torch.arange(target_mask.shape[1], device=target_mask.device)[None, :]
    index = torch.minimum(positions * n_s // n_t, n_s - 1)
    return torch.gather(tokens, 1, index[:, :, None].expand(-1, -1, tokens.shape[2]))


def token_loss(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per instance: sum_i w_i (1 - cos(s_i, t_i)) / sum_i w_i; 0 where all weights are 0."""
    distance = 1 - F.cosine_similarity(student, teacher.to(student.dtype), dim=-1)
    total = weights.sum(dim=1)
    return (weights * distance).sum(dim=1) / total.clamp(min=torch.finfo(total.dtype).tiny)


def global_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(student, teacher.to(student.dtype), dim=-1)


def token_weights(cfg: MadConfig, teacher_global: torch.Tensor, teacher_tokens: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """The a_i of L_tok: salience on the selected tokens (TS) or 1 on every real token."""
    if not cfg.token_selection:
        return mask.to(teacher_tokens.dtype)
    a = salience(teacher_global.float(), teacher_tokens.float(), mask, cfg.tau)
    return a * select_tokens(a, mask, cfg.token_ratio)


def confidence_weights(cfg: MadConfig, p_gold: torch.Tensor | None, batch: int,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """w per instance: the teacher's gold-label probability normalised to mean 1 (CW), else 1."""
    if not cfg.confidence_weighting or p_gold is None:
        return torch.ones(batch, device=device)
    if p_gold.shape != (batch,):
        raise ValueError(f"p_gold must be {batch} probabilities, got {tuple(p_gold.shape)}")
    # checked on the device: a host sync per step would stall a GPU
    torch._assert_async(((p_gold >= 0) & (p_gold <= 1)).all(), "p_gold must be probabilities")
    mean = p_gold.mean()
    return torch.where(mean > 0, p_gold / mean.clamp(min=torch.finfo(p_gold.dtype).tiny),
                       torch.zeros_like(p_gold))


class AdaptiveLambda:
    """lambda(t) for AF (the module docstring has the rule): ``update`` takes the student's
    held-out gold-label CE every ``af_every`` steps; ``value`` is the lambda in force."""

    def __init__(self, cfg: MadConfig, teacher_loss: float | None) -> None:
        if cfg.adaptive and (teacher_loss is None or not math.isfinite(teacher_loss)
                             or teacher_loss <= 0):
            raise ValueError(f"adaptive lambda needs the teacher probe's loss > 0, got "
                             f"{teacher_loss}")
        self.cfg = cfg
        self.teacher_loss = teacher_loss
        self.smoothed: float | None = None
        self.value = cfg.lambda0
        self.updates: list[dict[str, float]] = []  # one record per AF update, for the summary

    def due(self, step: int) -> bool:
        return self.cfg.adaptive and step % self.cfg.af_every == 0

    def update(self, held_out_loss: float, step: int) -> float:
        if not self.cfg.adaptive:
            return self.value
        beta = self.cfg.ema
        self.smoothed = held_out_loss if self.smoothed is None else (
            beta * self.smoothed + (1 - beta) * held_out_loss)
        self.value = self.cfg.lambda0 * min(1.0, self.smoothed / self.teacher_loss)
        self.updates.append({"step": step, "student_val_ce": held_out_loss,
                             "smoothed": self.smoothed, "probe_ce": self.teacher_loss,
                             "lambda": self.value})
        return self.value

    def state_dict(self) -> dict:
        return {"smoothed": self.smoothed, "value": self.value, "updates": list(self.updates)}

    def load_state_dict(self, state: dict) -> None:
        self.smoothed, self.value = state["smoothed"], state["value"]
        self.updates = list(state["updates"])


@dataclass
class DistillTargets:
    """Cached teacher features for a batch (fp16 on disk, any dtype here)."""

    vision_global: torch.Tensor  # [B, Dv]
    vision_tokens: torch.Tensor  # [B, Tv, Dv]
    vision_grid: tuple[int, int]
    text_global: torch.Tensor  # [B, Dt]
    text_tokens: torch.Tensor  # [B, Lt, Dt]
    text_mask: torch.Tensor  # [B, Lt] bool

    def to(self, device: torch.device | str) -> DistillTargets:
        """The batch on ``device`` (read from the cache on the host, then moved)."""
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        return DistillTargets(move(self.vision_global), move(self.vision_tokens), self.vision_grid,
                              move(self.text_global), move(self.text_tokens), move(self.text_mask))

    def pin_memory(self) -> DistillTargets:
        """The batch in pinned host memory (the loader's pinning thread calls this for CUDA)."""
        return DistillTargets(self.vision_global.pin_memory(), self.vision_tokens.pin_memory(),
                              self.vision_grid, self.text_global.pin_memory(),
                              self.text_tokens.pin_memory(), self.text_mask.pin_memory())


@dataclass
class StudentStates:
    """Student states already projected into the teacher's spaces by P."""

    vision_tokens: torch.Tensor  # [B, h*w, Dv]
    vision_grid: tuple[int, int]
    vision_global: torch.Tensor  # [B, Dv]
    text_tokens: torch.Tensor  # [B, Ls, Dt]
    text_mask: torch.Tensor  # [B, Ls] bool
    text_global: torch.Tensor  # [B, Dt]
    fused_text_tokens: torch.Tensor | None = None  # [B, Ls, Dt], the fusion's text states
    fused_global: torch.Tensor | None = None  # [B, Dv + Dt], the fusion's pooled state


def fused_global_target(teacher: DistillTargets) -> torch.Tensor:
    """Both teachers' global embeddings, each unit-normalised, side by side: [B, Dv + Dt]."""
    return torch.cat([F.normalize(teacher.vision_global.float(), dim=-1),
                      F.normalize(teacher.text_global.float(), dim=-1)], dim=-1)


def distillation_loss(cfg: MadConfig, student: StudentStates, teacher: DistillTargets,
                      p_gold: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-instance terms and w * (L_tok_vision + L_tok_text + L_glob) averaged over the batch.

    Multiply ``loss`` by lambda(t) and add the task loss to get L.
    """
    batch = teacher.vision_global.shape[0]
    vision_mask = torch.ones(teacher.vision_tokens.shape[:2], dtype=torch.bool,
                             device=teacher.vision_tokens.device)
    vision_student = resample_grid(student.vision_tokens, student.vision_grid, teacher.vision_grid)
    tok_vision = token_loss(
        vision_student, teacher.vision_tokens,
        token_weights(cfg, teacher.vision_global, teacher.vision_tokens, vision_mask),
    )
    text_weights = token_weights(cfg, teacher.text_global, teacher.text_tokens, teacher.text_mask)
    text_student = resample_sequence(student.text_tokens, student.text_mask, teacher.text_mask)
    tok_text = token_loss(text_student, teacher.text_tokens, text_weights)
    glob = (global_loss(student.vision_global, teacher.vision_global)
            + global_loss(student.text_global, teacher.text_global))
    fused = torch.zeros_like(glob)
    if cfg.fused_tokens:
        if student.fused_text_tokens is None:
            raise ValueError(f"fused={cfg.fused!r} needs the student's fused text states")
        fused_student = resample_sequence(student.fused_text_tokens, student.text_mask,
                                          teacher.text_mask)
        fused = fused + token_loss(fused_student, teacher.text_tokens, text_weights)
    if cfg.fused_pooled:
        if student.fused_global is None:
            raise ValueError(f"fused={cfg.fused!r} needs the student's fused pooled state")
        fused = fused + global_loss(student.fused_global, fused_global_target(teacher))
    w = confidence_weights(cfg, p_gold, batch, tok_vision.device).to(tok_vision.dtype)
    per_instance = tok_vision + tok_text + glob + fused
    return {
        "loss": (w * per_instance).mean(),
        "tok_vision": tok_vision.mean().detach(),
        "tok_text": tok_text.mean().detach(),
        "glob": glob.mean().detach(),
        "fused": fused.mean().detach(),
        "weights": w.detach(),
    }
