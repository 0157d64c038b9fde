"""Pretrained unimodal towers: the student's vision pyramid on a timm CNN and its text tower
from an open_clip text transformer, as LAVIS's ALBEF starts from a pretrained ViT and BERT.

The architecture is part of StudentConfig (``vision_backbone``, ``text_causal``), so any
checkpoint rebuilds without the pretrained files; the weights are read once, when pre-training
starts (``pretrain.init``), and from then on travel in the student's own checkpoints.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from vldistill.io import file_sha256


@functools.cache
def feature_info(name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(strides, channels) of a timm model's feature maps. Cached: a student is built for every
    stage and checkpoint load, and building the probe model costs seconds for large CNNs."""
    import timm

    try:
        probe = timm.create_model(name, pretrained=False, features_only=True)
    except RuntimeError as err:  # timm's "Unknown model"
        raise ValueError(f"student.vision_backbone: {err}") from err
    return tuple(probe.feature_info.reduction()), tuple(probe.feature_info.channels())


class TimmBackbone(nn.Module):
    """A timm model's feature maps at the pyramid's strides, for inputs in the student's range.

    Batch norm is frozen (running statistics, fixed affine): an image's features must not depend
    on its batch, or batched Slow scoring would differ from per-pair scoring. The timm model's
    own normalisation (its pretrained mean and std) is applied inside, so callers keep the
    student's (x - 0.5) / 0.5 input."""

    def __init__(self, name: str, channels: tuple[int, ...], strides: tuple[int, ...],
                 weights: str | Path | None = None) -> None:
        super().__init__()
        import timm
        from timm.layers import freeze_batch_norm_2d

        reductions, all_channels = feature_info(name)
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise ValueError(
                f"student.vision_backbone {name!r} has features at strides {list(reductions)}; "
                f"the student's {len(channels)} pyramid levels need strides {list(strides)}")
        indices = tuple(reductions.index(s) for s in strides)
        found = tuple(all_channels[i] for i in indices)
        if found != tuple(channels):
            raise ValueError(
                f"student.pyramid_channels must be {list(found)} for vision_backbone {name!r} "
                f"(its channels at strides {list(strides)}), got {list(channels)}")
        overlay = {"pretrained_cfg_overlay": {"file": str(weights)}} if weights else {}
        model = timm.create_model(name, pretrained=weights is not None, features_only=True,
                                  out_indices=indices, **overlay)
        self.model = freeze_batch_norm_2d(model)
        cfg = model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x01 = images * 0.5 + 0.5
        return list(self.model((x01 - self.mean) / self.std))


def load_vision_backbone(vision: nn.Module, weights: str | Path) -> dict[str, str]:
    """Copy a timm checkpoint (any file timm reads: .safetensors, .pth, .bin) into the pyramid's
    backbone; the record says what was loaded."""
    backbone = getattr(vision, "backbone", None)
    if backbone is None:
        raise ValueError("pretrain.init.vision needs student.vision_backbone (a timm model name)")
    source = TimmBackbone(vision.backbone_name, tuple(vision.channels), tuple(vision.strides),
                          weights=weights)
    backbone.load_state_dict(source.state_dict(), strict=True)
    return {"tower": "vision", "kind": "timm", "name": vision.backbone_name, "path": str(weights),
            "sha256": file_sha256(weights)}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or a torch file (bare state dict or a
    training checkpoint's ``state_dict``, DDP's ``module.`` prefix dropped)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(str(path))
    else:
        weights = torch.load(path, map_location="cpu", weights_only=True)
        weights = weights.get("state_dict", weights)
    return {k.removeprefix("module."): v for k, v in weights.items()}


def clip_text_weights(clip: dict[str, torch.Tensor], layers: int, context_length: int
                      ) -> dict[str, torch.Tensor]:
    """An open_clip CLIP state dict's text transformer under the TextEncoder's names: the same
    pre-LN blocks (q and k|v split from the packed in-projection), the token embedding, the
    first ``context_length`` positions and ln_final."""
    if "token_embedding.weight" not in clip:
        raise ValueError("not an open_clip CLIP checkpoint: no token_embedding.weight (models "
                         "with a Hugging Face text tower are not supported)")
    source_layers = len({k.split(".")[2] for k in clip if k.startswith("transformer.resblocks.")})
    if source_layers != layers:
        raise ValueError(f"student.text_layers must be {source_layers} for this text checkpoint "
                         f"(its layers), got {layers}")
    positions = clip["positional_embedding"]
    if context_length > positions.shape[0]:
        raise ValueError(f"student.context_length {context_length} exceeds the checkpoint's "
                         f"{positions.shape[0]} positions")
    out = {"token_embedding.weight": clip["token_embedding.weight"],
           "pos_embedding": positions[:context_length],
           "ln_final.weight": clip["ln_final.weight"], "ln_final.bias": clip["ln_final.bias"]}
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"blocks.{i}."
        width = clip[src + "attn.out_proj.weight"].shape[0]
        for part in ("weight", "bias"):
            packed = clip[f"{src}attn.in_proj_{part}"]
            out[f"{dst}attn.q.{part}"] = packed[:width]
            out[f"{dst}attn.kv.{part}"] = packed[width:]
            out[f"{dst}attn.proj.{part}"] = clip[f"{src}attn.out_proj.{part}"]
            out[f"{dst}mlp.fc.{part}"] = clip[f"{src}mlp.c_fc.{part}"]
            out[f"{dst}mlp.proj.{part}"] = clip[f"{src}mlp.c_proj.{part}"]
            for norm in ("ln_1", "ln_2"):
                out[f"{dst}{norm}.{part}"] = clip[f"{src}{norm}.{part}"]
    return out


def load_clip_text(text: nn.Module, weights: str | Path) -> dict[str, str]:
    """Copy an open_clip CLIP checkpoint's text transformer into the student's text tower (the
    tower's pooled LayerNorm is its own and keeps its init); the record says what was loaded."""
    own = text.state_dict()
    layers = len(text.blocks)
    mapped = clip_text_weights(read_state_dict(weights), layers, own["pos_embedding"].shape[0])
    for key, value in mapped.items():
        if own[key].shape != value.shape:
            raise ValueError(f"{weights}: text weight {key} has shape {tuple(value.shape)}, the "
                             f"student's {tuple(own[key].shape)}: set student.width and "
                             f"heads to the checkpoint's text width")
    text.load_state_dict(mapped, strict=False)
    return {"tower": "text", "kind": "open_clip", "path": str(weights),
            "sha256": file_sha256(weights)}
