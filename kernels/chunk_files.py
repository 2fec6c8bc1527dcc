"""The chunk file of a chunked run: one chunk's frames stored losslessly, bit for bit (PyAV, torch, numpy).

A chunk's restored frames are kept as **FFV1 in Matroska** (8-bit RGB, intra-only, lossless), so they come back
exactly as the final encoder would get them, without the double compression of decoding the workflow's own
H.264 and encoding the stitched video again (``headless/stitch.py`` says more). The pack's
``ZSVRHeadless_ChunkOutput`` node (``nodes/chunk_output.py``) writes it, in the runner's own process and on a
ComfyUI server alike, so a chunk made in either place is the same file.
"""

from __future__ import annotations

import fractions
import os
import pathlib
from typing import Iterator

import av
import numpy as np
import torch

CHUNK_FORMAT = "ffv1-bgr0-matroska-v1"
"""Identifies how chunk files are stored (part of a chunk's settings key)."""


def _uint8(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (float 0..1) to uint8 with rounding (k / 255 comes back as k)."""
    return (images.detach().to("cpu", torch.float32).clamp(0, 1) * 255.0).round_().to(torch.uint8)


def write_chunk(path: os.PathLike, images: torch.Tensor, fps: float) -> int:
    """Store ``images`` ``[F, H, W, 3]`` (float 0..1) losslessly at ``path`` (written whole or not at all)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    rate = fractions.Fraction(fps).limit_denominator(100_000) if fps and fps > 0 else fractions.Fraction(24)
    count = 0
    try:
        with av.open(str(tmp), "w", format="matroska") as container:
            stream = container.add_stream("ffv1", rate=rate)
            stream.height, stream.width = int(images.shape[1]), int(images.shape[2])
            stream.pix_fmt = "bgr0"
            for i in range(images.shape[0]):
                frame = av.VideoFrame.from_ndarray(_uint8(images[i]).numpy(), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                count += 1
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def iter_chunk(path: os.PathLike) -> Iterator[np.ndarray]:
    """The frames of a chunk file as uint8 ``[H, W, 3]`` RGB arrays, in order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            for frame in packet.decode():
                yield frame.to_ndarray(format="rgb24")
