"""The math of the ZSVR methods, never ``comfy``: torch and numpy, plus kornia, PyAV and OpenCV where named.

One concept per module; every function states the paper equation it implements. What the modules import:

- torch and numpy: most modules (and the standard library);
- kornia: ``color_match`` (Lab colour conversion and blurs);
- PyAV (``av``): ``video_io`` (streaming decode, the clip probe) and ``chunk_files`` (the chunk files);
- OpenCV (``cv2``): ``optical_flow``'s DIS flow estimator, imported only when a flow is estimated, so the
  pack imports without OpenCV;
- psutil, optionally: ``video_io``'s default memory limit (it falls back without it).

ComfyUI's ``comfy`` is never imported here: that lives in ``nodes/`` and ``nodes/adapters/``.
"""
