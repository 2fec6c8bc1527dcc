"""Chunk files and the stitched output of a chunked run (docs/long-clips.md), streaming, with the source's sound.

How a chunk's frames come back from the workflow, and why this way: the
workflow's own save node writes lossy H.264; decoding that and encoding the
stitched video again would compress every frame twice and crossfade
compression artefacts. So in chunk mode the runner replaces the workflow's
output nodes with the pack's chunk sink (``nodes/chunk_output.py``) fed by the
IMAGE that went into the video, and the sink stores it with
``kernels/chunk_files.write_chunk``: **FFV1 in Matroska**, lossless and intra-only, so the
8-bit RGB frames (the same 8 bits the final encoder would get) come back bit
for bit with ``iter_chunk``, frame by frame, at a quarter to a half of
the size of raw frames (a quarter to a third on the realrain clips); a chunk
file is also an ordinary video one can open
to look at. Float precision beyond 8 bits is not kept: the output is 8-bit.

* ``write_chunk`` writes ``<path>.tmp`` and renames it when complete, so
  a chunk file that exists under its name is whole.
* :func:`iter_stitched` yields the output's frames in order. Each frame is
  the crossfade of the chunks covering it (``kernels/chunking.py``:
  raised-cosine weights summing to 1, exact where the chunks agree). Every
  chunk file is read once, front to back; its reader opens at the chunk's
  first frame and closes after its last, so memory holds one frame per chunk
  covering the current frame, however long the clip.
* :func:`write_video` encodes the frames as H.264 (CRF 18, yuv420p; yuv444p
  for odd sizes) in MP4 at the source's exact frame rate, under
  ``<stem>.partial.mp4``, renamed to the final name only when complete. The
  source's first audio stream is interleaved as the video is written: its
  packets copied unchanged when MP4 can hold the codec (:data:`MP4_COPY_CODECS`),
  else decoded and encoded as AAC. Sound keeps its timing relative to the
  source's first video frame.
"""

from __future__ import annotations

import fractions
import os
import pathlib
from typing import Iterable, Iterator, Optional, Sequence

import av
import numpy as np
import torch

from ..kernels import chunking
from ..kernels.chunk_files import iter_chunk

MP4_COPY_CODECS = frozenset({"aac", "mp3", "alac", "ac3", "eac3"})
"""Audio codecs whose packets MP4 takes as they are."""

VIDEO_CRF = 18
AUDIO_LEAD_S = 0.5
"""Audio is muxed up to this far ahead of the video written so far (bounded interleaving)."""


class StitchError(ValueError):
    """Chunk files that do not fit the plan (missing frames, different sizes)."""


def iter_stitched(plan: Sequence[chunking.Chunk], paths: Sequence[os.PathLike]) -> Iterator[np.ndarray]:
    """The whole clip's frames (uint8 ``[H, W, 3]``) from the chunk files, crossfaded; see the module docstring."""
    if len(paths) != len(plan):
        raise StitchError(f"{len(paths)} chunk files for a plan of {len(plan)} chunks")
    weights = [chunking.chunk_weights(c) for c in plan]
    readers: dict[int, Iterator[np.ndarray]] = {}
    shape = None
    try:
        for frame in range(plan[-1].end):
            sources = chunking.frame_sources(plan, frame, weights)
            arrays = []
            for index, local, _ in sources:
                if index not in readers:
                    readers[index] = iter_chunk(paths[index])
                array = next(readers[index], None)
                if array is None:
                    raise StitchError(
                        f"chunk {index} ({pathlib.Path(paths[index]).name}) ends after {local} frames, "
                        f"the plan needs {plan[index].frames}"
                    )
                if shape is None:
                    shape = array.shape
                elif array.shape != shape:
                    raise StitchError(
                        f"chunk {index} has frames of {array.shape[1]}x{array.shape[0]}, the others "
                        f"{shape[1]}x{shape[0]}: every chunk must come out at the same size"
                    )
                arrays.append(array)
            for index, local, _ in sources:
                if local == plan[index].frames - 1:
                    readers.pop(index).close()
            if len(arrays) == 1:
                yield arrays[0]
            else:
                mixed = chunking.blend([torch.from_numpy(a) for a in arrays], [w for _, _, w in sources])
                yield mixed.round_().clamp_(0, 255).to(torch.uint8).numpy()
    finally:
        for reader in readers.values():
            reader.close()


# ---------------------------------------------------------------------------
# Audio: copy or re-encode the source's track, interleaved with the video.
# ---------------------------------------------------------------------------


class _Audio:
    """The source's first audio stream, written into an output container alongside the video."""

    def __init__(self, source: os.PathLike, shift_s: float, copy: bool):
        self.container = av.open(str(source))
        self.input = self.container.streams.audio[0]
        self.shift_s = float(shift_s)
        self.copy = copy
        self.packets = self.container.demux(self.input)
        self.pending: list = []
        self.done = False
        self.output = None
        self.resampler = None
        self.samples = 0

    def add_to(self, out) -> None:
        if self.copy:
            self.output = out.add_stream_from_template(template=self.input, opaque=True)
            return
        rate = int(self.input.sample_rate or 48000)
        if rate not in (av.codec.Codec("aac", "w").audio_rates or (rate,)):
            rate = 48000
        channels = len(self.input.layout.channels) if self.input.layout else 2
        layout = {1: "mono", 6: "5.1"}.get(channels, "stereo")  # named layouts AAC takes; others mixed to stereo
        self.output = out.add_stream("aac", rate=rate)
        self.output.layout = layout
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)

    def _next_items(self):
        """Next packets to mux (copied, or freshly encoded); [] at the end."""
        for packet in self.packets:
            if self.copy:
                if packet.dts is None:
                    continue
                if self.shift_s:
                    offset = int(round(self.shift_s / packet.time_base))
                    packet.pts = None if packet.pts is None else packet.pts - offset
                    packet.dts -= offset
                packet.stream = self.output
                return [packet]
            encoded = []
            for frame in packet.decode():
                frame.pts = None
                for resampled in self.resampler.resample(frame):
                    encoded.extend(self._encode(resampled))
            if encoded:
                return encoded
        if not self.copy and not self.done:
            self.done = True
            tail = []
            for resampled in self.resampler.resample(None):
                tail.extend(self._encode(resampled))
            return tail + list(self.output.encode(None))
        self.done = True
        return []

    def _encode(self, frame) -> list:
        """Encode with timestamps counted in samples from 0 (the encoder then marks its priming for the muxer)."""
        frame.pts, frame.time_base = self.samples, fractions.Fraction(1, frame.sample_rate)
        self.samples += frame.samples
        return list(self.output.encode(frame))

    def _time(self, packet) -> float:
        stamp = packet.dts if packet.dts is not None else packet.pts
        return float(stamp * packet.time_base) if stamp is not None and packet.time_base else 0.0

    def mux_until(self, out, seconds: Optional[float]) -> None:
        """Mux audio up to ``seconds`` of output time (None: all of it)."""
        while True:
            if not self.pending:
                if self.done and not self.copy:
                    return
                self.pending = self._next_items()
                if not self.pending:
                    return
            if seconds is not None and self._time(self.pending[0]) > seconds:
                return
            out.mux(self.pending.pop(0))

    def close(self) -> None:
        self.container.close()


def write_video(
    path: os.PathLike,
    frames: Iterable[np.ndarray],
    rate: fractions.Fraction,
    audio_source: Optional[os.PathLike] = None,
    audio_copy: bool = True,
    audio_shift_s: float = 0.0,
    crf: int = VIDEO_CRF,
) -> int:
    """Encode ``frames`` (uint8 RGB) to MP4 at ``path`` via ``<stem>.partial.mp4``; mux the source's audio.

    ``audio_source``: the file whose first audio stream goes along (None: no
    sound); ``audio_copy``: copy its packets (else encode AAC);
    ``audio_shift_s``: the source's first video frame time, subtracted from the
    audio's timestamps. Returns the number of frames written.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    rate = fractions.Fraction(rate)
    audio = _Audio(audio_source, audio_shift_s, audio_copy) if audio_source is not None else None
    count = 0
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = None
            for array in frames:
                if stream is None:
                    height, width = array.shape[:2]
                    stream = out.add_stream("libx264", rate=rate)
                    stream.width, stream.height = width, height
                    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
                    stream.options = {"crf": str(crf)}
                    if audio is not None:
                        audio.add_to(out)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                frame.pts = count
                for packet in stream.encode(frame):
                    out.mux(packet)
                count += 1
                if audio is not None:
                    audio.mux_until(out, count / rate + AUDIO_LEAD_S)
            if stream is None:
                raise StitchError("no frames to write")
            for packet in stream.encode():
                out.mux(packet)
            if audio is not None:
                audio.mux_until(out, None)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if audio is not None:
            audio.close()
    return count
