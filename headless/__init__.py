"""Running the pack's workflows outside the web page: the one in-process ComfyUI boot and the UI->API converter.

Used by ``run_workflow.py``, the benches and the tests; ComfyUI never loads it as nodes.
"""
