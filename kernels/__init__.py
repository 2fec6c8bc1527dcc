"""Pure math of the ZSVR methods: torch/numpy/kornia only, never ``comfy``.

One concept per module; every function states the paper equation it implements.
"""
