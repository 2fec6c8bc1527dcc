"""Kernel errors name their parameter (issue 22, item 6): each former bare ``ValueError`` is a ``ParameterError``.

Each case calls one kernel function with one bad value and checks that the error names the kernel's own
parameter, that its message starts with that name (kornia's style, ``kernels/errors.py``) and says what to do.
"""

from __future__ import annotations

import pytest
import torch

from zsvr.kernels import cogvideox_rope, cogvideox_schedule, cross_frame_attention, frame_layout, inversion
from zsvr.kernels import temporal_attention as ta
from zsvr.kernels.errors import ParameterError
from zsvr.nodes.errors import InputError

CASES = {
    "crop_region grid not a pair": (lambda: cogvideox_rope.crop_region((4, 4, 4), 8, 8), "grid"),
    "crop_region grid height": (lambda: cogvideox_rope.crop_region((0, 4), 8, 8), "grid"),
    "crop_region grid width": (lambda: cogvideox_rope.crop_region((4, True), 8, 8), "grid"),
    "crop_region base_w": (lambda: cogvideox_rope.crop_region((4, 4), 0, 8), "base_w"),
    "crop_region base_h": (lambda: cogvideox_rope.crop_region((4, 4), 8, 2.5), "base_h"),
    "betas beta_schedule": (lambda: cogvideox_schedule.betas("cosine_x", 10, 0.1, 0.2), "beta_schedule"),
    "betas num_train_timesteps": (lambda: cogvideox_schedule.betas("linear", 1, 0.1, 0.2), "num_train_timesteps"),
    "rescale_zero_terminal_snr sigmas": (lambda: cogvideox_schedule.rescale_zero_terminal_snr(torch.ones(1)),
                                         "sigmas"),
    "schedule_sigmas trained_betas": (lambda: cogvideox_schedule.schedule_sigmas({"trained_betas": [0.1]}),
                                      "scheduler_config"),
    "schedule_sigmas beta_schedule": (lambda: cogvideox_schedule.schedule_sigmas({"beta_schedule": "cosine_x"}),
                                      "scheduler_config"),
    "schedule_sigmas snr_shift_scale": (lambda: cogvideox_schedule.schedule_sigmas({"snr_shift_scale": 0}),
                                        "scheduler_config"),
    "plan_windows lengths": (lambda: cross_frame_attention.plan_windows([0, 0], [0], 1), "video"),
    "plan_windows negative position": (lambda: cross_frame_attention.plan_windows([0, 0], [-1, 0], 1), "position"),
    "apply_plan rows": (lambda: cross_frame_attention.apply_plan(
        torch.zeros(3, 2), cross_frame_attention.plan_windows([0, 0], [0, 1], 1)), "plan"),
    "batch_layout rows": (lambda: frame_layout.batch_layout(5, [0, 1], 0), "rows"),
    "step_coefficients b": (lambda: inversion.step_coefficients("ddim", 1.0, 0.0, 0.9, 0.1), "b"),
    "step_coefficients a_next": (lambda: inversion.step_coefficients("ddim", 0.9, 0.1, 0.0, 1.0), "a_next"),
    "plan_neighbours lengths": (lambda: ta.plan_neighbours([0, 0], [0]), "video"),
    "neighbour_context rows": (lambda: ta.neighbour_context(torch.zeros(3, 2, 2), ta.plan_neighbours([0, 0], [0, 1])),
                               "plan"),
    "similarity_targets shapes": (lambda: ta.similarity_targets(torch.zeros(4, 3), torch.zeros(5, 3)), "feat_a"),
    "patch_errors guide shapes": (lambda: ta.patch_errors(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9),
                                                          torch.zeros(1, 4, dtype=torch.long), (2, 2), 4), "guide_a"),
    "patch_errors targets": (lambda: ta.patch_errors(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8),
                                                     torch.zeros(1, 5, dtype=torch.long), (2, 2), 4), "targets"),
    "select_targets shapes": (lambda: ta.select_targets(torch.zeros(2, 4), torch.zeros(3, 4)), "candidates"),
    "trajectory_indices lengths": (lambda: ta.trajectory_indices([torch.zeros(4, dtype=torch.long)] * 2,
                                                                 [torch.zeros(4, dtype=torch.long)], 0, 4),
                                   "backward"),
}


@pytest.mark.parametrize("call, parameter", list(CASES.values()), ids=list(CASES))
def test_error_names_its_parameter(call, parameter):
    with pytest.raises(ParameterError) as info:
        call()
    error = info.value
    assert error.parameter == parameter
    assert str(error).startswith(parameter + " ")
    assert error.fix, "the message says what to do"
    assert isinstance(error, ValueError) and not isinstance(error, InputError)


def test_type_error_names_its_parameter():
    with pytest.raises(TypeError) as info:
        cogvideox_schedule.schedule_sigmas([("beta_schedule", "linear")])
    assert str(info.value).startswith("scheduler_config ")
