"""The chunked runner's output node: stores one chunk's IMAGE losslessly at a given path (``kernels/chunk_files.py``).

In chunk mode the runner removes the workflow's output nodes and connects the
IMAGE that went into the video to this node (see ``headless/stitch.py`` for
why a lossless file instead of the workflow's mp4). It is registered only in
the runner's in-process host (:func:`register`), under
``ZSVRHeadless_ChunkSink``; it is not one of the pack's nodes, so it is no
part of the node contract and never shows in the editor. (A runner that sends
chunks to remote ComfyUI servers would need it there as a pack node.)
"""

from __future__ import annotations

from ..kernels import chunk_files

NODE_ID = "ZSVRHeadless_ChunkSink"


class ChunkSink:
    """Writes ``images`` to ``path`` as FFV1/Matroska (whole or not at all); always runs (never cached)."""

    CATEGORY = "ZSVR/headless"
    RETURN_TYPES = ()
    FUNCTION = "write"
    OUTPUT_NODE = True
    DESCRIPTION = "Chunked runs only: stores a chunk's frames losslessly for stitching."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The chunk's restored frames."}),
            "path": ("STRING", {"default": "", "tooltip": "Absolute path of the chunk file (.mkv)."}),
            "fps": ("FLOAT", {"default": 24.0, "min": 0.001, "max": 1000.0, "tooltip": "Frame rate stored in the file."}),
        }}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # the file must be written every time the runner asks

    def write(self, images, path, fps):
        frames = chunk_files.write_chunk(path, images, fps)
        return {"ui": {"zsvr_chunk": [{"path": path, "frames": frames}]}}


def register(nodes_module) -> str:
    """Add the sink to a booted host's node registry (``ComfyHost.nodes``); returns its node id."""
    nodes_module.NODE_CLASS_MAPPINGS.setdefault(NODE_ID, ChunkSink)
    return NODE_ID
