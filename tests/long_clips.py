"""Test and bench clips for chunked runs: long clips with sound, built from the realrain clips with PyAV.

* :func:`write_clip` loops the realrain frames (shrunk, H.264 with a keyframe
  every ``gop`` frames so seeking matters) to any length, with a generated
  stereo sine track (440 Hz left, 660 Hz right) as AAC, as PCM (in a
  Matroska file, which MP4 cannot take as it is), as AAC whose packets are
  overwritten with noise (undecodable), or none; optionally with variable
  frame timing.
* :func:`clip_frames` takes frames of one realrain clip (one shot): joined, they make a clip with known cuts.
* :func:`decode_frames` / :func:`decode_audio` read a file back with PyAV
  alone (independent of the pack's loader), for comparisons.
"""

from __future__ import annotations

import fractions
import pathlib

import av
import numpy as np

from host_harness import REALRAIN_DIR

SAMPLE_RATE = 44100


def realrain_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """``count`` frames (uint8 RGB ``[height, width, 3]``) from the realrain clips in order, looping."""
    frames: list[np.ndarray] = []
    clips = sorted(REALRAIN_DIR.glob("*.mp4"))
    if not clips:
        raise FileNotFoundError(f"no realrain clips in {REALRAIN_DIR}")
    while len(frames) < count:
        for clip in clips:
            with av.open(str(clip)) as container:
                for frame in container.decode(video=0):
                    frames.append(frame.reformat(width=width, height=height, format="rgb24",
                                                 interpolation="AREA").to_ndarray())
                    if len(frames) == count:
                        return frames
    return frames


def clip_frames(name: str, count: int, width: int, height: int, first: int = 0) -> list[np.ndarray]:
    """Frames ``first .. first + count - 1`` of the realrain clip ``<name>.mp4`` (uint8 RGB, one shot each)."""
    frames = []
    with av.open(str(REALRAIN_DIR / f"{name}.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= first:
                frames.append(frame.reformat(width=width, height=height, format="rgb24",
                                             interpolation="AREA").to_ndarray())
            if len(frames) == count:
                break
    if len(frames) < count:
        raise ValueError(f"{name}.mp4 has fewer than {first + count} frames")
    return frames


def sine(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Stereo float32 ``[2, samples]``: 440 Hz left, 660 Hz right."""
    t = np.arange(int(round(seconds * rate))) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)


def write_clip(path: pathlib.Path, count: int, width: int = 176, height: int = 120, fps: int = 8, gop: int = 16,
               audio: str | None = "aac", variable_rate: bool = False, frames: list[np.ndarray] | None = None,
               crf: int = 20) -> pathlib.Path:
    """Write a ``count``-frame clip; ``audio`` is "aac", "pcm", "broken" (AAC packets overwritten) or None.
    ``crf`` 0 is lossless (of the yuv420p frames): clips holding the same frames decode to the same pixels."""
    path = pathlib.Path(path)
    frames = frames if frames is not None else realrain_frames(count, width, height)
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"g": str(gop), "keyint_min": str(gop), "crf": str(crf)}
    if variable_rate:
        video.codec_context.time_base = video.time_base = fractions.Fraction(1, 1000)
    sound = None
    if audio is not None:
        sound = container.add_stream("pcm_s16le" if audio == "pcm" else "aac", rate=SAMPLE_RATE)
        sound.layout = "stereo"
    wave = sine(count / fps)
    block = 1024
    written = 0
    t_ms = 0
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
        if variable_rate:
            frame.pts = t_ms
            frame.time_base = fractions.Fraction(1, 1000)  # ms (the muxer changes the stream's)
            t_ms += 1000 // fps if i % 3 else 2 * 1000 // fps
        else:
            frame.pts = i
        for packet in video.encode(frame):
            container.mux(packet)
        while sound is not None and written < wave.shape[1] and written / SAMPLE_RATE <= (i + 1) / fps:
            piece = wave[:, written:written + block]
            data = piece if audio != "pcm" else (piece * 32767).astype(np.int16).T.reshape(1, -1)
            layout_format = "fltp" if audio != "pcm" else "s16"
            aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=layout_format, layout="stereo")
            aframe.sample_rate = SAMPLE_RATE
            aframe.pts = written
            for packet in sound.encode(aframe):
                container.mux(packet)
            written += piece.shape[1]
    for packet in video.encode():
        container.mux(packet)
    if sound is not None:
        for packet in sound.encode():
            container.mux(packet)
    container.close()
    if audio == "broken":
        _scramble_audio(path)
    return path


def _scramble_audio(path: pathlib.Path) -> None:
    with av.open(str(path)) as container:
        spans = [(p.pos, p.size) for p in container.demux(audio=0) if p.size and p.pos is not None]
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for pos, size in spans:
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def decode_frames(path: pathlib.Path) -> np.ndarray:
    """Every frame as uint8 ``[N, H, W, 3]``."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_audio(path: pathlib.Path) -> tuple[np.ndarray, int] | None:
    """The first audio stream, every decoded sample as float32 ``[channels, samples]``, and its rate; None if absent."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        pieces = []
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            if not frame.format.is_planar:
                data = data.reshape(-1, len(frame.layout.channels)).T
            if data.dtype == np.int16:
                data = data.astype(np.float32) / 32768.0
            pieces.append(data.astype(np.float32))
        return np.concatenate(pieces, axis=1), int(stream.sample_rate)


def video_info(path: pathlib.Path) -> dict:
    """Frame count (decoded), frame rate, size and audio codec of a file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        return {"frames": count, "rate": stream.average_rate, "width": stream.codec_context.width,
                "height": stream.codec_context.height, "audio": audio}


ENCODER_NOISE = 2.0
"""Mean absolute difference (0..255) allowed between two H.264 encodes of the *same* frames.

libx264 through PyAV is not bit-reproducible on this machine: encoding identical uint8 frames in parallel
processes gave different bitstreams (also with one encoder thread), decoding 0.7-1.3 apart on average (max 12;
a resumed run's stitch, 33 frames, up to 17), while the encode is about 3 from its source. Saved videos are
therefore compared within this bound; what must be bit-identical is compared before encoding (the chunk files
and the stitched frames).
"""


def same_up_to_the_encoder(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, and a mean absolute difference within :data:`ENCODER_NOISE`."""
    return a.shape == b.shape and float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) <= ENCODER_NOISE
