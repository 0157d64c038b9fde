"""open_clip vision and text towers as teachers, with patch/word tokens in the embedding space.

open_clip's towers return the pooled, projected embedding; their token outputs are not projected.
We project the tokens with the same matrix (after the same final LayerNorm), so
cos(global, token) compares vectors of one space. Supported: ViT image towers without attentional
pooling, and causal text transformers (the CLIP family). Others raise ValueError.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from PIL import Image

from vldistill.teachers.base import (
    ImageFeatures,
    TextFeatures,
    TextTeacher,
    TextTeacherConfig,
    VisionTeacher,
    VisionTeacherConfig,
)


def _check_model_name(model: str | None) -> str:
    import open_clip

    if not model:
        raise ValueError("the open_clip teacher needs 'model' (an architecture, e.g. 'ViT-B-16')")
    has_schema = model.startswith(("hf-hub:", "local-dir:"))
    if not has_schema and model.replace("/", "-") not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip architecture {model!r}; see open_clip.list_models() "
            f"(or register a config with open_clip.add_model_config)"
        )
    return model


def _load_error(model: str, pretrained: str, exc: Exception) -> RuntimeError:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return RuntimeError(
        f"open_clip could not load pretrained weights {pretrained!r} for {model!r}: {exc}. "
        f"Without internet the weights must already be cached where open_clip looks: the Hugging "
        f"Face hub cache ({hf_home}/hub) for hub-hosted tags, ~/.cache/clip for URL tags. "
        f"Pre-download them on a machine with internet with {_fetch_hint(model, pretrained)} "
        f"and copy the cache over, or set 'pretrained' to a local checkpoint file."
    )


def _fetch_hint(model: str, pretrained: str) -> str:
    """The command that fills the cache for this model and tag."""
    import open_clip

    with contextlib.suppress(Exception):  # an unknown tag has no registry entry
        repo = (open_clip.get_pretrained_cfg(model, pretrained) or {}).get("hf_hub", "")
        if repo:
            return f"`hf download {repo.rstrip('/')}`"
    return f"open_clip.create_model({model!r}, pretrained={pretrained!r})"


def _create(model: str, pretrained: str | None, device: str, **kwargs: Any):
    """create_model_and_transforms with an error that says where the weights should be."""
    import open_clip

    _check_model_name(model)
    try:
        return open_clip.create_model_and_transforms(
            model, pretrained=pretrained, device=device, **kwargs
        )
    except (RuntimeError, OSError, FileNotFoundError, ValueError) as exc:
        if pretrained:
            raise _load_error(model, pretrained, exc) from exc
        raise


class OpenClipVisionTeacher(VisionTeacher):
    def __init__(self, cfg: VisionTeacherConfig, device: str = "cpu") -> None:
        from open_clip.transformer import VisionTransformer

        # force_image_size honours the config; open_clip interpolates pretrained position
        # embeddings when it differs from the architecture's native size.
        model, _, self.preprocess = _create(
            cfg.model, cfg.pretrained, device, force_image_size=cfg.image_size
        )
        visual = model.visual
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise ValueError(
                f"open_clip model {cfg.model!r} has a {type(visual).__name__} image tower; the "
                f"teacher needs a ViT without attentional pooling to get patch tokens"
            )
        visual.output_tokens = True
        self.model = model.eval()
        self.visual = visual
        self.device = device
        self.batch_size = cfg.batch_size
        self.grid = tuple(int(g) for g in visual.grid_size)
        width = visual.ln_post.normalized_shape[0]
        self.dim = int(visual.proj.shape[1]) if visual.proj is not None else int(width)

    def _encode_batch(self, images: list[Image.Image]) -> ImageFeatures:
        x = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        pooled, tokens = self.visual(x)
        # With final_ln_after_pool only the pooled vector went through ln_post.
        if self.visual.final_ln_after_pool:
            tokens = self.visual.ln_post(tokens)
        if self.visual.proj is not None:
            tokens = tokens @ self.visual.proj
        return ImageFeatures(
            global_emb=pooled.float().cpu(),
            tokens=tokens.float().cpu().contiguous(),
            grid=self.grid,
        )


class _TextTower:
    """The parts of a causal CLIP text tower, wherever the model class keeps them."""

    def __init__(self, model: torch.nn.Module, name: str) -> None:
        from open_clip.transformer import TextTransformer

        text = getattr(model, "text", None)
        if text is None:  # open_clip.CLIP flattens the text tower into the model
            src, self.pool_type, self.eos_id = model, model.text_pool_type, model.text_eos_id
        elif isinstance(text, TextTransformer) and text.cls_emb is None:
            src, self.pool_type, self.eos_id = text, text.pool_type, text.eos_id
        else:
            raise ValueError(
                f"open_clip model {name!r} has a {type(text).__name__} text tower that this "
                f"teacher does not support (needs a causal TextTransformer without a class token)"
            )
        if src.attn_mask is None:
            # Bidirectional towers see the padding, so features would depend on max_length.
            raise ValueError(
                f"open_clip model {name!r} has a bidirectional text tower; only causal ones "
                f"(the CLIP family) are supported"
            )
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = src.text_projection
        self.attn_mask = src.attn_mask
        self.context_length = int(src.positional_embedding.shape[0])

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, torch.nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (pooled, tokens), both projected; mirrors open_clip's CLIP.encode_text."""
        from open_clip.transformer import text_global_pool

        length = ids.shape[1]
        cast = self.transformer.get_cast_dtype()
        x = self.token_embedding(ids).to(cast) + self.positional_embedding[:length].to(cast)
        # Causal attention: the first `length` outputs do not depend on later positions, so
        # running on a shorter context gives open_clip's own values for those tokens.
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        pooled = text_global_pool(x, ids, self.pool_type, eos_token_id=self.eos_id)
        return self.project(pooled), self.project(x)

    def real_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Mask of the tokens up to and including the end-of-text token."""
        if self.pool_type == "argmax":  # CLIP's BPE: end-of-text has the highest id
            end = ids.argmax(dim=-1)
        elif self.pool_type == "eos":
            end = (ids == self.eos_id).int().argmax(dim=-1)
        else:
            return ids != 0
        positions = torch.arange(ids.shape[1], device=ids.device)
        return positions.unsqueeze(0) <= end.unsqueeze(1)


class OpenClipTextTeacher(TextTeacher):
    def __init__(self, cfg: TextTeacherConfig, device: str = "cpu") -> None:
        import open_clip

        model, _, _ = _create(cfg.model, cfg.pretrained, device)
        self.model = model.eval()
        self.tower = _TextTower(model, cfg.model)
        if cfg.max_length > self.tower.context_length:
            raise ValueError(
                f"max_length {cfg.max_length} exceeds the {self.tower.context_length}-token "
                f"context of open_clip model {cfg.model!r}"
            )
        self.tokenizer = open_clip.get_tokenizer(cfg.model, context_length=cfg.max_length)
        self.device = device
        self.max_length = cfg.max_length
        self.batch_size = cfg.batch_size
        proj = self.tower.text_projection
        if isinstance(proj, torch.nn.Linear):
            self.dim = int(proj.out_features)
        elif proj is not None:
            self.dim = int(proj.shape[1])
        else:
            self.dim = int(self.tower.ln_final.normalized_shape[0])

    def _encode_batch(self, texts: list[str]) -> TextFeatures:
        ids = self.tokenizer(texts).to(self.device)  # [B, max_length], truncated with an eot
        pooled, tokens = self.tower.forward(ids)
        return TextFeatures(
            global_emb=pooled.float().cpu(),
            tokens=tokens.float().cpu().contiguous(),
            mask=self.tower.real_tokens(ids).cpu(),
        )
