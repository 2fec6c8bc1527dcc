"""ZSVRTest_RandomConditioning: CONDITIONING without a text encoder, for tiny models in tests.

One source for both ways the tests load it: ``host_harness`` registers the class in-process, and
``test_servers`` copies this file as a stand-in custom-node pack into each server's ``custom_nodes``
(so in-process and server runs draw the same conditioning). Needs only torch.
"""

import torch


class RandomConditioning:
    """CONDITIONING without a text encoder: [[randn(1, tokens, width) * scale, {}]]."""

    CATEGORY = "ZSVR/testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            "tokens": ("INT", {"default": 8, "min": 1, "max": 1024}),
            "width": ("INT", {"default": 4096, "min": 1, "max": 8192}),
            "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0}),
        }, "optional": {
            "pooled": ("INT", {"default": 0, "min": 0, "max": 8192}),
            "masked_tokens": ("INT", {"default": 0, "min": 0, "max": 1024}),
        }}

    def make(self, seed, tokens, width, scale, pooled=0, masked_tokens=0):
        """``pooled`` > 0 adds a (fixed) pooled vector of that width; ``masked_tokens`` masks the last tokens out."""
        gen = torch.Generator().manual_seed(seed)
        extra = {}
        if pooled:  # one fixed pooled vector, so prompts differ only in their token sequence
            extra["pooled_output"] = torch.randn(1, pooled, generator=torch.Generator().manual_seed(0))
        if masked_tokens:
            mask = torch.ones(1, tokens, dtype=torch.long)
            mask[:, tokens - masked_tokens:] = 0
            extra["attention_mask"] = mask
        return ([[torch.randn(1, tokens, width, generator=gen) * scale, extra]],)


NODE_CLASS_MAPPINGS = {"ZSVRTest_RandomConditioning": RandomConditioning}
