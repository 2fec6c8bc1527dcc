"""The pack's example clip: listed by ``ZSVR_LoadVideo`` and read from the pack's own folder.

Every shipped workflow opens with ``zsvr_example_rain.mp4`` (``example_media/``,
49 frames, 349 KB), so that its first Run works in a fresh ComfyUI with nothing
copied by hand. The clip is *offered*, not installed:

* ``ZSVR_LoadVideo`` lists the example clips after the videos of ComfyUI's
  input folder, and a name that is not in the input folder but is an example
  clip's resolves to ``example_media/`` in the pack (:func:`video_path`).
* Nothing is written to the user's input folder. Copying the clip there when the
  pack loads was the alternative; it would surprise users (a file they never
  added appears in their input folder, and comes back after they delete it), it
  fails on a read-only or shared ``--input-directory``, and after an update of
  the pack the old copy would stay. Read from the pack, the clip updates and
  uninstalls with the pack.
* A file of the same name in the input folder wins: the user's own file is
  never shadowed.

One limit: the page's preview of the chosen video reads ComfyUI's input folder,
so it shows no preview for the example clip (the node still loads it); upload a
clip to see one.
"""

from __future__ import annotations

import os

import folder_paths

from ..kernels import confined_paths
from .errors import InputError, kernel_inputs

EXAMPLE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_media")
"""The pack's ``example_media`` folder."""

EXAMPLE_VIDEO = "zsvr_example_rain.mp4"
"""The clip the shipped workflows open with."""


def example_videos() -> list[str]:
    """The video files of ``example_media/``, sorted (empty if the folder is missing)."""
    try:
        names = [f for f in os.listdir(EXAMPLE_DIR) if os.path.isfile(os.path.join(EXAMPLE_DIR, f))]
    except OSError:
        return []
    return sorted(folder_paths.filter_files_content_types(names, ["video"]))


def with_examples(input_videos: list[str]) -> list[str]:
    """The loader's choices: the input folder's videos, then the example clips not already among them."""
    return list(input_videos) + [name for name in example_videos() if name not in input_videos]


def allowed_folders() -> list[str]:
    """Where a ``video`` name may lead: ComfyUI's input, output and temp folders, and ``example_media/``."""
    return [folder_paths.get_input_directory(), folder_paths.get_output_directory(),
            folder_paths.get_temp_directory(), EXAMPLE_DIR]


def video_path(name: str) -> str:
    """The file a ``video`` choice names: the input folder's (annotated names such as ``clip.mp4 [output]`` and
    names in subfolders included), else the example clip of that name, else the input-folder path (which then
    does not exist).

    Raises:
        InputError: ``video`` is an absolute path, steps out with ``..``, holds a NUL byte, or leads out of
            :func:`allowed_folders` through a symbolic link (a server on a network must not read other files).
    """
    filename, _ = folder_paths.annotated_filepath(name)
    with kernel_inputs(name="video"):
        confined_paths.check_relative_name(filename, "name")
    if folder_paths.exists_annotated_filepath(name):
        path = folder_paths.get_annotated_filepath(name)
    elif name in example_videos():
        path = os.path.join(EXAMPLE_DIR, name)
    else:
        path = folder_paths.get_annotated_filepath(name)
    if not confined_paths.inside(path, allowed_folders()):
        raise InputError("video", f"{name!r} leads out of ComfyUI's input, output and temp folders through a link",
                         "put the video itself in ComfyUI's input folder (or a subfolder) or upload it")
    return path


def video_exists(name: str) -> bool:
    """Whether :func:`video_path` names an existing file (raises its InputError for a name that leads out)."""
    return os.path.isfile(video_path(name))
