"""Video clips: decoding with PyAV, uniform frame sampling, lossless writing, and a clip bank.

A video dataset reuses the ``images`` manifest table, one row per clip (``image_path`` is the clip
file, ``width``/``height`` its video stream's size). A clip is read as ``n_frames`` frames
sampled uniformly over its whole length (the midpoint of each of ``n_frames`` equal segments),
each seen as the image path sees a picture: its square view at ``size`` x ``size``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
import torch
from av.container import InputContainer
from av.video.stream import VideoStream
from tqdm import tqdm

from vldistill.data.images import PixelBank, image_table, load_image_bank, square_view
from vldistill.data.manifest import BadExampleError
from vldistill.io import atomic_output

# File suffixes read as clips (validation decodes these with read_clip instead of as images).
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mkv", ".webm", ".avi", ".mov")

# write_clip's suffix -> (container format, encoder, encoder pixel format, encoder options).
# Both are lossless in RGB, so a written clip reads back bit-exactly: H.264 RGB at qp 0 in MP4
# (smaller on smooth content, frame count in the header, a truncated file fails to open) and
# FFV1 (intra-only) in Matroska. One encoder thread keeps the bytes the same on every machine.
WRITERS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    ".mp4": ("mp4", "libx264rgb", "rgb24", {"qp": "0", "preset": "veryfast"}),
    ".mkv": ("matroska", "ffv1", "bgr0", {}),
}
# Without it the Matroska muxer writes a random segment UID: the same frames, other bytes.
_BITEXACT = {"fflags": "+bitexact"}


def is_clip(path: str | Path) -> bool:
    """Whether a manifest path names a video clip (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def sample_frame_indices(n_frames_in_clip: int, n: int) -> list[int]:
    """``n`` frame indices spread uniformly over a clip: the midpoint of each of ``n`` equal
    segments. When ``n`` exceeds the clip's length, frames repeat evenly (each about n/length
    times); the indices never decrease."""
    if n < 1:
        raise ValueError(f"need at least one frame per clip, got n={n}")
    if n_frames_in_clip < 1:
        raise BadExampleError(f"cannot sample {n} frame(s) from a clip with {n_frames_in_clip}")
    # floor((i + 0.5) * length / n) in integers: exact, no float rounding at segment edges
    return [(2 * i + 1) * n_frames_in_clip // (2 * n) for i in range(n)]


@contextlib.contextmanager
def _video(path: str | Path) -> Iterator[tuple[InputContainer, VideoStream]]:
    """The clip's container and first video stream; any PyAV or file-system failure inside the
    block (opening, demuxing, decoding) becomes a BadExampleError naming the file."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise BadExampleError(f"cannot read clip {path}: it has no video stream")
            yield container, container.streams.video[0]
    except (av.FFmpegError, OSError) as exc:
        raise BadExampleError(f"cannot read clip {path}: {type(exc).__name__}: {exc}") from exc


def clip_info(path: str | Path) -> tuple[int, float, int, int]:
    """(frames, frames per second, width, height) of a clip's first video stream.

    The frame count comes from the container header where it has one (MP4); otherwise (Matroska,
    WebM) the packets are counted without decoding them. fps is 0.0 when the file gives none.
    """
    with _video(path) as (container, stream):
        frames = stream.frames
        if frames <= 0:
            frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        rate = stream.average_rate or stream.guessed_rate
        return frames, float(rate) if rate else 0.0, stream.width, stream.height


def _decode_at(path: str | Path, indices: Sequence[int], size: int
               ) -> tuple[dict[int, np.ndarray], int]:
    """The frames at ``indices`` (sorted) resized to size x size, and how many frames were
    decoded: all of them if the clip ended before the last index, else up to that index."""
    wanted = set(indices)
    last = max(indices)
    picked: dict[int, np.ndarray] = {}
    decoded = 0
    with _video(path) as (container, stream):
        # one frame at a time: only the sampled ones are kept, however long the clip
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in wanted:
                picked[index] = np.asarray(square_view(frame.to_image(), size),  # RGB
                                           dtype=np.uint8)
            if index >= last:
                break
    return picked, decoded


def read_clip(path: str | Path, n_frames: int, size: int) -> np.ndarray:
    """``n_frames`` frames sampled uniformly over the whole clip as uint8 [T, S, S, 3] RGB.

    Raises BadExampleError naming the file if it is missing, not a video, or has no frames.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    length = clip_info(path)[0]
    if length < 1:
        raise BadExampleError(f"cannot read clip {path}: it has no frames")
    indices = sample_frame_indices(length, n_frames)
    picked, decoded = _decode_at(path, indices, size)
    if len(picked) < len(set(indices)):
        # Fewer frames decode than the header counts (an edit list trims the start, or the file
        # is damaged): sample again over the frames that do decode.
        if decoded < 1:
            raise BadExampleError(f"cannot read clip {path}: none of its {length} frames decode")
        indices = sample_frame_indices(decoded, n_frames)
        picked, _ = _decode_at(path, indices, size)
    return np.stack([picked[i] for i in indices])


def write_clip(frames: np.ndarray, path: str | Path, fps: int = 8) -> None:
    """Write uint8 RGB frames [T, H, W, 3] losslessly, atomically; the suffix of ``path``
    (``.mp4`` or ``.mkv``, see WRITERS) picks the codec. ``read_clip(path, T, H)`` of a square
    clip gives ``frames`` back exactly."""
    path = Path(path)
    if path.suffix.lower() not in WRITERS:
        raise ValueError(f"cannot write a clip as {path.name}: the suffix must be one of "
                         f"{sorted(WRITERS)}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or not len(frames):
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} "
                         f"{frames.shape}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    fmt, codec, pix_fmt, options = WRITERS[path.suffix.lower()]
    with atomic_output(path) as tmp, av.open(str(tmp), "w", format=fmt,
                                             container_options=_BITEXACT) as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.thread_count = 1
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the frames the encoder still holds


class ClipBank(PixelBank):
    """Clips, uint8 [N, T, 3, S, S]: N * T * 3 * S * S bytes, so 8 frames at 64 px are 98 KB a
    clip, at 224 px 1.2 MB."""

    layout = "[N, T, 3, S, S]"
    ndim = 5
    item = "clip"


def read_clip_checked(root: str | Path, rel_path: str, clip_id: str, n_frames: int,
                      size: int) -> np.ndarray:
    """``read_clip`` of a manifest's clip; a failure names the clip and says what to re-run."""
    try:
        return read_clip(Path(root) / rel_path, n_frames, size)
    except BadExampleError as exc:
        raise BadExampleError(f"{exc} (image_id {clip_id}); the data rule checked it, so "
                              "it changed since: re-run the data rule") from exc


def load_clip_bank(root: str | Path, image_manifests: Sequence[str | Path], n_frames: int,
                   size: int, progress: bool = True) -> ClipBank:
    """Decode every clip listed in the given ``images`` manifests (manifest order): ``n_frames``
    uniformly sampled frames each, resized to ``size``."""
    table = image_table(image_manifests)
    pixels = torch.empty((len(table), n_frames, 3, size, size), dtype=torch.uint8)
    rows = zip(table["image_id"], table["image_path"], strict=True)
    for i, (clip_id, rel_path) in enumerate(tqdm(rows, total=len(table), unit="clip",
                                                 desc="clips", disable=not progress)):
        array = read_clip_checked(root, rel_path, clip_id, n_frames, size)
        pixels[i] = torch.from_numpy(array).permute(0, 3, 1, 2)
    return ClipBank(table["image_id"].to_list(), pixels)




def load_visual_bank(root: str | Path, image_manifests: Sequence[str | Path], size: int,
                     frames: int = 1, progress: bool = True) -> PixelBank:
    """What a model with ``frames`` frames reads: still images (1) or clips of that many frames;
    both banks answer ``rows``, ``batch`` and ``at`` alike."""
    if frames == 1:
        return load_image_bank(root, image_manifests, size, progress=progress)
    return load_clip_bank(root, image_manifests, frames, size, progress=progress)
