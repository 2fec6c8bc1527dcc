"""Test helpers for SD U-Net attention layers: find a layer's attn1 module and record its calls."""


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
