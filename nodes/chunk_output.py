"""``ZSVRHeadless_ChunkOutput``: one chunk's frames stored losslessly in ComfyUI's output folder, for the runner.

``run_workflow.py ... --chunk-frames N`` runs each chunk of a clip as its own
prompt whose only output is this node: in the runner's own ComfyUI
(``headless/chunked_run.py``, which moves the file into the clip's chunk
folder) or on a ComfyUI server (``headless/remote_chunks.py``, which fetches
it through ``/view``). The node writes only inside ComfyUI's output folder
(ComfyUI's own path check), so a server takes no path from a prompt. The file
(``kernels/chunk_files.write_chunk``: FFV1 in Matroska, 8-bit RGB, bit for
bit) is the same in either place, so a chunk restored on a server stitches
exactly as one restored in-process.

The node id does not start with ``ZSVR_``: it is the runner's, not part of the
pack's public node contract, and has no use in the editor. It is flagged
deprecated (``is_deprecated``), ComfyUI's one flag that keeps a node out of the
page's node search and library (unless the user turns on showing deprecated
nodes); its display name says it is the runner's.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..kernels import chunk_files, confined_paths
from .errors import InputError
from .types import CATEGORY

NODE_ID = "ZSVRHeadless_ChunkOutput"


class ChunkOutput(io.ComfyNode):
    """Writes ``images`` to ``<output>/<filename_prefix>.mkv`` (whole or not at all) and lists it in the history."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Chunk Output (ZSVR runner only)",
            category=f"{CATEGORY}/headless",
            description=(
                "Used by run_workflow.py --servers with --chunk-frames: stores a chunk's frames losslessly "
                "(FFV1 in Matroska) in the output folder for the runner to fetch and stitch. Not needed in the editor."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The chunk's restored frames."),
                io.String.Input("filename_prefix", default="zsvr_runner/chunk",
                                tooltip="File name (without .mkv) inside the output folder; may hold subfolders."),
                io.Float.Input("fps", default=24.0, min=0.001, max=1000.0, tooltip="Frame rate stored in the file."),
            ],
            outputs=[],
            is_output_node=True,
            not_idempotent=True,
            is_deprecated=True,  # hidden from the page's node list: the runner adds it to its own prompts
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")  # written every time the runner asks

    @classmethod
    def execute(cls, images, filename_prefix: str, fps: float) -> io.NodeOutput:
        out_dir = folder_paths.get_output_directory()
        # ComfyUI's own check that the file stays inside the output folder (and creates the subfolder)
        folder, name, _, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, out_dir, int(images.shape[2]), int(images.shape[1]))
        filename = f"{name}.mkv"
        if not confined_paths.inside(os.path.join(folder, filename), [out_dir]):  # a link in output leading out
            raise InputError("filename_prefix", f"{filename_prefix!r} leads out of ComfyUI's output folder through a "
                             "link", "give a name inside the output folder")
        frames = chunk_files.write_chunk(os.path.join(folder, filename), images, fps)
        return io.NodeOutput(ui={"zsvr_chunk": [
            {"filename": filename, "subfolder": subfolder, "type": "output", "frames": frames}]})
