"""ComfyUI node classes (V3 API), the engines they install (``engines/``) and the model-family adapters
(``adapters/``): the only package that imports ``comfy``.

Nodes are thin: they parse inputs, call ``kernels``, and wrap outputs. This file imports nothing, so the
comfy-free modules here (``errors``, ``run_state``) can be used without ComfyUI (the headless runner's
``--servers`` mode, kernel tests); ``extension.py`` lists the nodes for ComfyUI.
"""
