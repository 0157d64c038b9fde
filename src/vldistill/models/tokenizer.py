"""open_clip's BPE tokenizer (ships with the package, no download) plus the padding mask.

Rows are ``[SOT, content..., EOT, pad...]`` with pad id 0. Id 0 is also a real BPE token ("!"),
so the mask is derived from the EOT position, never from ``ids != 0``. Over-long texts are
truncated with EOT kept as the last token, so every row has exactly one EOT and the last real
token of every row is EOT (the text and fusion towers pool there).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch


def _open_clip_tokenizer_module() -> ModuleType:
    """open_clip's ``tokenizer.py`` alone, without running the package's ``__init__``.

    Importing ``open_clip`` builds its whole model registry (timm, torch.compile hooks): seconds
    of start-up in every job that only needs the BPE tokenizer, which is self-contained (stdlib,
    ftfy, regex, numpy, torch and its vocabulary file beside it).
    """
    name = "_vldistill_open_clip_tokenizer"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("open_clip")
    if package is None or package.origin is None:
        raise ImportError("open_clip_torch is not installed; it provides the BPE tokenizer")
    source = Path(package.origin).parent / "tokenizer.py"
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


SimpleTokenizer = _open_clip_tokenizer_module().SimpleTokenizer


def mask_from_ids(ids: torch.Tensor, eot_id: int) -> torch.Tensor:
    """True up to and including the first EOT of each row."""
    is_eot = ids == eot_id
    if not bool(is_eot.any(dim=1).all()):
        raise ValueError("every row must contain an EOT token")
    eot_pos = is_eot.int().argmax(dim=1, keepdim=True)
    return torch.arange(ids.shape[1], device=ids.device)[None, :] <= eot_pos


def reverse_ids(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse the content tokens between SOT and EOT; SOT stays first, EOT last, pads stay.

    Used for backward captioning: the same decoder reads the caption right to left. The mask is
    unchanged by the reversal. One gather, no loop over rows.
    """
    length = mask.sum(dim=1, keepdim=True)  # SOT + content + EOT
    pos = torch.arange(ids.shape[1], device=ids.device)[None, :].expand_as(ids)
    content = (pos >= 1) & (pos <= length - 2)
    src = torch.where(content, length - 1 - pos, pos)
    return ids.gather(1, src)


def trim_padding(ids: torch.Tensor, mask: torch.Tensor, device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing columns that no row of the batch uses (any leading dims).

    Texts are tokenised once to the full context length, but a batch of short questions needs
    only its longest row: attention cost grows with the columns, and padding changes no output.
    Trim on the host, before a batch moves to the device (``used_columns``); with ``device``
    the trimmed batch is then moved there.
    """
    n = used_columns(mask)
    ids, mask = ids[..., :n], mask[..., :n]
    if device is None:
        return ids, mask
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def used_columns(mask: torch.Tensor) -> int:
    """The columns a model must compute: the longest row on the CPU, where reading it is free;
    on an accelerator the full width, since reading it would wait for the device (batches are
    trimmed by ``trim_padding`` on the host before they move, so little is wasted)."""
    if mask.device.type != "cpu":
        return mask.shape[-1]
    return max(int(mask.sum(dim=-1).max()), 1) if mask.numel() else 1


class Tokenizer:
    def __init__(self, context_length: int = 32) -> None:
        if context_length < 2:
            raise ValueError("context_length must hold at least SOT and EOT")
        self.context_length = context_length
        self._bpe = SimpleTokenizer(context_length=context_length)
        self.sot_id: int = self._bpe.sot_token_id
        self.eot_id: int = self._bpe.eot_token_id
        self.pad_id: int = 0
        self.vocab_size: int = len(self._bpe.encoder)

    def __call__(self, texts: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (ids LongTensor [B, L], mask BoolTensor [B, L]) with L = context_length."""
        ids = self._bpe(texts)
        return ids, mask_from_ids(ids, self.eot_id)

    def decode(self, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """Content tokens of each row back to text (SOT, EOT and pads dropped)."""
        out = []
        for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
            content = [t for t, keep in zip(row, m, strict=True) if keep][1:-1]
            out.append(self._bpe.decode(content).strip())
        return out
