"""Quality figures of a derained clip against its clean ground truth (all on ``[T, 3, H, W]`` in [0, 1]).

* ``psnr``: 10 log10(1 / MSE) over the whole clip;
* ``ssim``: kornia's SSIM (7x7 Gaussian window), mean over frames and pixels;
* ``rain_removed``: the share of the rain's error energy gone from where it rains,
  ``1 - |(out - clean) M|^2 / |(rainy - clean) M|^2`` with ``M`` = rain opacity > 0.01
  (1: the rain region matches the clean clip; 0: untouched; negative: worse);
* ``side_change``: the energy of what changed where it does not rain, relative to the rain's
  energy, ``|(out - rainy)(1 - M)|^2 / |rainy - clean|^2`` (0: the scene was left alone);
* ``warp_error``: temporal consistency (Lai et al., ECCV 2018, mean absolute error): each
  frame ``t+1`` warped onto frame ``t`` with the *ground truth's* optical flow (OpenCV DIS on
  the clean clip upsampled 4x, through the pack's ``kernels.optical_flow``), averaged over
  the pixels the forward-backward check finds visible, mean over the pairs.
"""

from __future__ import annotations

import math

import torch

RAIN_MASK_THRESHOLD = 0.01


def psnr(out: torch.Tensor, clean: torch.Tensor) -> float:
    """PSNR in dB of ``out`` (clamped to [0, 1]) against ``clean``."""
    mse = float((out.clamp(0, 1) - clean).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def ssim(out: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean SSIM (7x7 window) of ``out`` (clamped) against ``clean``."""
    from kornia.metrics import ssim as kornia_ssim

    return float(kornia_ssim(out.clamp(0, 1).float(), clean.float(), window_size=7).mean())


def rain_split(out: torch.Tensor, rainy: torch.Tensor, clean: torch.Tensor, alpha: torch.Tensor) -> tuple[float, float]:
    """(rain_removed, side_change) as defined in the module docstring."""
    out = out.clamp(0, 1)
    mask = (alpha > RAIN_MASK_THRESHOLD).to(out.dtype).expand_as(out)
    rain_energy = float((rainy - clean).pow(2).sum())
    rain_in_mask = float(((rainy - clean) * mask).pow(2).sum())
    left = float(((out - clean) * mask).pow(2).sum())
    side = float(((out - rainy) * (1 - mask)).pow(2).sum())
    return 1 - left / max(rain_in_mask, 1e-12), side / max(rain_energy, 1e-12)


class GroundTruthFlow:
    """Flow and visibility of a clean clip's consecutive frames, for :meth:`warp_error` of any output."""

    def __init__(self, flow_module, clean: torch.Tensor, upsample: int = 4):
        size = clean.shape[-2:]
        big = torch.nn.functional.interpolate(clean.float(), scale_factor=upsample, mode="bicubic",
                                              align_corners=False).clamp(0, 1)
        fw = flow_module.flow_pairs(big, forward=True)
        bw = flow_module.flow_pairs(big, forward=False)
        occluded = flow_module.occlusion_mask(fw, bw)
        self.flow_module = flow_module
        self.flow = flow_module.resize_flow(fw, size)
        self.visible = ~flow_module.resize_mask(occluded, size, threshold=0.5)
        self.mean_motion = float(self.flow.norm(dim=1).mean())

    def warp_error(self, frames: torch.Tensor) -> float:
        """Masked mean |O_t - warp(O_{t+1})| over the visible pixels, averaged over pairs."""
        frames = frames.clamp(0, 1).float()
        errors = []
        for t in range(frames.shape[0] - 1):
            warped = self.flow_module.warp(frames[t + 1:t + 2], self.flow[t:t + 1], padding_mode="border")
            diff = (frames[t:t + 1] - warped).abs().mean(1, keepdim=True)
            m = self.visible[t:t + 1].float()
            errors.append(float((diff * m).sum() / m.sum().clamp_min(1.0)))
        return sum(errors) / len(errors)


def clip_figures(out: torch.Tensor, clean: torch.Tensor, rainy: torch.Tensor, alpha: torch.Tensor,
                 gt_flow: GroundTruthFlow) -> dict[str, float]:
    """Every figure the benches report for one output clip: PSNR and SSIM against the clean clip, the share of
    the rain removed and the side changes (:func:`rain_split`), and the warping error with the clean clip's flow."""
    removed, side = rain_split(out, rainy, clean, alpha)
    return {"psnr": psnr(out, clean), "ssim": ssim(out, clean), "rain_removed": removed, "side_change": side,
            "warp_error": gt_flow.warp_error(out)}


def temporal_median(rainy: torch.Tensor) -> torch.Tensor:
    """Baseline: the per-pixel median over a clip's frames, for every frame (a static-camera deraining)."""
    return rainy.median(dim=0, keepdim=True).values.expand_as(rainy).clone()


def spatial_median(rainy: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Baseline: a ``k`` x ``k`` median filter on each frame and channel (reflect-padded)."""
    pad = k // 2
    x = torch.nn.functional.pad(rainy, (pad, pad, pad, pad), mode="reflect")
    patches = x.unfold(2, k, 1).unfold(3, k, 1)                      # [T, 3, H, W, k, k]
    return patches.reshape(*patches.shape[:4], -1).median(dim=-1).values
