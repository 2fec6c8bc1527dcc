"""Test helpers for SD U-Net attention layers: find a layer's attn1 module and record its calls; the models a
frame-attention patch of an image U-Net must refuse."""


def attn1_module(model_patcher, block, index=0):
    """The ``attn1`` module of transformer ``index`` in U-Net block ``block`` (e.g. ("input", 1))."""
    from comfy.ldm.modules.attention import SpatialTransformer

    unet = model_patcher.model.diffusion_model
    container = {"input": unet.input_blocks, "output": unet.output_blocks}[block[0]][block[1]]
    st = next(m for m in container if isinstance(m, SpatialTransformer))
    return st.transformer_blocks[index].attn1


class LayerCapture:
    """A test attn1_patch (runs after the pack's) and attn1_output_patch recording one layer's calls."""

    def __init__(self, block):
        self.block = block
        self.calls: list[dict] = []

    def _mine(self, extra) -> bool:
        return tuple(extra.get("block", ())) == self.block and extra.get("block_index", 0) == 0

    def attn1(self, n, context, value, extra):
        if self._mine(extra):
            window = extra.get("context_window")
            self.calls.append({"n": n.detach().clone(), "context": context.detach().clone(),
                               "cond_or_uncond": list(extra["cond_or_uncond"]),
                               "index_list": list(window.index_list) if window is not None else None,
                               "sigma": float(extra["sigmas"].flatten()[0]), "heads": extra["n_heads"]})
        return n, context, value

    def output(self, out, extra):
        if self._mine(extra):
            self.calls[-1]["out"] = out.detach().clone()
        return out

    def install(self, model_patcher):
        model_patcher.set_model_attn1_patch(self.attn1)
        model_patcher.set_model_attn1_output_patch(self.output)
        return model_patcher


class Observer:
    """The pack's debug observer (``nodes.run_state``): records what the patches report during sampling.

    ``events`` counts every event; ``data[event]`` keeps the payloads; ``runs`` the run states the SLR patches
    started (the latest run's choices stay readable in ``runs[-1].history``). Clones of the model share it.
    """

    def __init__(self):
        import collections

        self.events = collections.Counter()
        self.data = collections.defaultdict(list)
        self.runs: list = []

    def __call__(self, event, data):
        self.events[event] += 1
        self.data[event].append(data)
        if event == "slr.run":
            self.runs.append(data["state"])

    def __deepcopy__(self, memo):
        return self

    def chosen(self) -> dict:
        """How often each correspondence candidate was chosen (SLR's "slr.chosen" reports, summed)."""
        import collections

        total = collections.Counter()
        for data in self.data["slr.chosen"]:
            total.update(data["counts"])
        return total

    def install(self, model_patcher, key: str):
        """Install on ``model_patcher`` (its ``transformer_options[key]``); returns the model."""
        model_patcher.model_options.setdefault("transformer_options", {})[key] = self
        return model_patcher


def assert_refuses_other_than_image_unets(host, patch, unsupported: str = "") -> None:
    """``patch(model)``, a node that patches an image U-Net's self-attention across frames (SW-CFA, SLR), refuses
    with the pack's ``InputError`` on ``'model'`` the tiny Wan (a video model: it already attends across frames)
    and a model whose diffusion model is no U-Net (the message then matches ``does not support`` + ``unsupported``)."""
    import types

    import comfy.sd
    import pytest
    import torch

    from host_harness import input_error

    InputError = input_error(host)
    wan = comfy.sd.load_diffusion_model(str(host.models["wan"]))
    with pytest.raises(InputError, match="'model'.*already attends across frames"):
        patch(wan)
    fake = types.SimpleNamespace(model=types.SimpleNamespace(
        diffusion_model=torch.nn.Linear(1, 1), latent_format=types.SimpleNamespace(latent_dimensions=2)))
    with pytest.raises(InputError, match="'model'.*does not support" + unsupported):
        patch(fake)
