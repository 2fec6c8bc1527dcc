"""Inversion kernel tests without ComfyUI: an analytic Gaussian denoiser stands in for the model."""

import math

import pytest
import torch

from zsvr.kernels import inversion as k
from zsvr.kernels.errors import ParameterError
from zsvr.kernels.guidance import negative_prompt_edit


def ve_scaling(sigma, noise, latent):  # EPS/V models in k-diffusion form
    return latent + sigma * noise


def flow_scaling(sigma, noise, latent):  # CONST / rectified flow
    return sigma * noise + (1 - sigma) * latent


PATHS = {"ve": ve_scaling, "flow": flow_scaling}


def schedule(path: str, n: int) -> torch.Tensor:
    if path == "ve":
        s = torch.exp(torch.linspace(math.log(14.6), math.log(0.03), n))
    else:
        t = torch.linspace(1.0, 0.0, n + 1)[:-1]
        s = 8 * t / (1 + 7 * t)  # shift 8, like Wan
    return torch.cat([s, torch.zeros(1)])


def gaussian_denoiser(path: str, mean: torch.Tensor):
    """Exact E[x0 | x] for x0 ~ N(mean, I): a smooth stand-in for a trained model."""

    def denoise(x, sigma):
        a, b = k.path_coefficients(PATHS[path], [sigma])
        a, b = a[0], b[0]
        # x = a x0 + b eps  ->  E[x0|x] = mean + a (x - a mean) / (a^2 + b^2)
        return mean + (x - a * mean) * (a / (a * a + b * b))

    return denoise


def test_path_coefficients_read_a_and_b():
    a, b = k.path_coefficients(ve_scaling, [2.0, 0.0])
    assert a == [1.0, 1.0] and b == [2.0, 0.0]
    a, b = k.path_coefficients(flow_scaling, [1.0, 0.25])
    assert a == [0.0, 0.75] and b == [1.0, 0.25]
    with pytest.raises(ParameterError, match="noise_scaling"):
        k.path_coefficients(lambda s, n, l: n * n + l, [1.0])


def test_ddpm_step_is_the_ancestral_step_for_ve():
    s, s2 = 3.0, 1.2
    c = k.step_coefficients("ddpm", 1.0, s, 1.0, s2)
    sigma_down = s2 * s2 / s
    sigma_up = s2 * math.sqrt(1 - s2 * s2 / (s * s))
    assert math.isclose(c.c_x, sigma_down / s) and math.isclose(c.c_x0, 1 - sigma_down / s)
    assert math.isclose(c.std, sigma_up)


def test_flow_ddpm_step_is_the_ve_step_in_equivalent_sigma():
    sig, sig2 = 0.8, 0.5
    s, s2 = sig / (1 - sig), sig2 / (1 - sig2)
    flow = k.step_coefficients("ddpm", 1 - sig, sig, 1 - sig2, sig2)
    ve = k.step_coefficients("ddpm", 1.0, s, 1.0, s2)
    # x_flow = (1 - sig) y:  x'_flow = (1 - sig2) (c0 x0 + c (x_flow / (1 - sig)) + std z)
    assert math.isclose(flow.c_x0, (1 - sig2) * ve.c_x0)
    assert math.isclose(flow.c_x, (1 - sig2) * ve.c_x / (1 - sig))
    assert math.isclose(flow.std, (1 - sig2) * ve.std)


def test_zsvd_rule_is_ddim_mean_plus_posterior_noise():
    c = k.step_coefficients("zsvd", 1.0, 4.0, 1.0, 2.0)
    d = k.step_coefficients("ddim", 1.0, 4.0, 1.0, 2.0)
    p = k.step_coefficients("ddpm", 1.0, 4.0, 1.0, 2.0)
    assert (c.c_x0, c.c_x) == (d.c_x0, d.c_x) and d.std == 0.0
    assert c.std == p.std > 0


def test_last_step_to_zero_is_deterministic_and_starting_from_pure_noise_works():
    for rule in k.RULES:
        assert k.step_coefficients(rule, 1.0, 0.3, 1.0, 0.0) == k.StepCoefficients(1.0, 0.0, 0.0)
    c = k.step_coefficients("ddpm", 0.0, 1.0, 0.5, 0.5)  # flow sigma 1 -> 0.5
    assert c.c_x == 0.0 and math.isclose(c.c_x0, 0.5) and math.isclose(c.std, 0.5)


def test_level_noise_is_reproducible_and_independent():
    a = k.level_noise(3, 7, (4, 5))
    assert torch.equal(a, k.level_noise(3, 7, (4, 5)))
    assert not torch.equal(a, k.level_noise(3, 8, (4, 5)))
    assert not torch.equal(a, k.level_noise(4, 7, (4, 5)))


@pytest.mark.parametrize("path", ["ve", "flow"])
@pytest.mark.parametrize("rule", ["ddpm", "zsvd"])
def test_stochastic_inversion_replays_exactly(path, rule):
    """ddpm (exact last step): every level and x0 come back. zsvd: every level above the last comes back
    exactly and the replay ends on the model's prediction at the last level (the official loop's end)."""
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    sig = schedule(path, 30)
    a, b = k.path_coefficients(PATHS[path], sig)
    model = gaussian_denoiser(path, torch.full_like(x0, 0.3))
    for skip in (0, 12, 29):
        inv = k.invert(model, x0, sig, a, b, rule, seed=5, first_step=skip)
        official = rule == "zsvd"
        assert inv.model_calls == 30 - skip - (1 if official else 0)
        assert all(s is None for s in inv.stored[:skip])
        assert all(s is not None for s in inv.stored[skip:29]) and (inv.stored[29] is None) == official
        x = inv.start_latent(skip)
        start, coeffs, stored = k.plan_replay(inv, sig[skip:], skip)
        assert start == skip and len(coeffs) == 30 - skip
        seen = []
        out = k.replay(lambda xx, j: model(xx, float(sig[skip + j])), x, coeffs, stored,
                       on_step=lambda j, x0_hat, xj: seen.append((xj.clone(), x0_hat.clone())))
        for j, (xj, _) in enumerate(seen):  # every level the replay passes through is the inverted one
            level = k.noisy_level(x0, a[skip + j], b[skip + j], 5, skip + j)
            assert float((xj - level).norm() / level.norm()) < 1e-10
        if official:
            assert torch.allclose(out, seen[-1][1] * a[30], rtol=0, atol=1e-12)  # the last prediction itself
            assert float((out - x0).norm() / x0.norm()) > 1e-6
        else:
            assert float((out - x0).norm() / x0.norm()) < 1e-10


@pytest.mark.parametrize("path", ["ve", "flow"])
def test_last_step_prediction_ends_on_the_prediction_and_exact_on_x0(path):
    torch.manual_seed(1)
    x0 = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    sig = schedule(path, 12)
    a, b = k.path_coefficients(PATHS[path], sig)
    model = gaussian_denoiser(path, torch.full_like(x0, 0.1))
    for rule in ("ddpm", "ddim"):
        inv = k.invert(model, x0, sig, a, b, rule, seed=2, sigma_floor=1e-3)
        outs = {}
        for last in k.LAST_STEPS:
            start, coeffs, stored = k.plan_replay(inv, sig, 0, (a, b), last)
            preds = []
            outs[last] = k.replay(lambda xx, j: model(xx, float(sig[j])), inv.start_latent(start), coeffs, stored,
                                  on_step=lambda j, x0_hat, xj: preds.append(x0_hat))
            if last == "prediction":
                assert torch.allclose(outs[last], preds[-1] * a[-1], rtol=0, atol=1e-12)
        assert not torch.allclose(outs["exact"], outs["prediction"])
        if rule == "ddpm":
            assert float((outs["exact"] - x0).norm() / x0.norm()) < 1e-10
    with pytest.raises(ParameterError, match="last_step"):
        k.plan_replay(inv, sig, 0, (a, b), "residual")


@pytest.mark.parametrize("path", ["ve", "flow"])
def test_edited_replay_changes_the_output(path):
    x0 = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    sig = schedule(path, 20)
    a, b = k.path_coefficients(PATHS[path], sig)
    model = gaussian_denoiser(path, torch.zeros_like(x0))
    inv = k.invert(model, x0, sig, a, b, "ddpm", seed=1)
    coeffs = [inv.coefficients(i) for i in range(20)]
    edited = k.replay(lambda xx, j: model(xx, float(sig[j])) + 0.1, inv.start_latent(0), coeffs, inv.stored)
    assert float((edited - x0).abs().max()) > 1e-3


@pytest.mark.parametrize("path", ["ve", "flow"])
def test_ddim_inversion_converges_with_steps(path):
    x0 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    errors = []
    for n in (40, 160, 640):
        sig = schedule(path, n)
        a, b = k.path_coefficients(PATHS[path], sig)
        model = gaussian_denoiser(path, torch.full_like(x0, -0.2))
        inv = k.invert(model, x0, sig, a, b, "ddim", seed=0, sigma_floor=1e-3)
        assert inv.model_calls == n + 1 and sorted(inv.trajectory) == list(range(n + 1))
        coeffs = [inv.coefficients(i) for i in range(n)]
        stored = [None] * (n - 1) + [inv.stored[n - 1]]
        out = k.replay(lambda xx, j: model(xx, float(sig[j])), inv.start_latent(0), coeffs, stored)
        errors.append(float((out - x0).norm() / x0.norm()))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.05


def test_level_for_noise_uses_the_equivalent_eps_sigma():
    x0 = torch.zeros(1, 1, 1, 1)
    sig = schedule("flow", 100)
    a, b = k.path_coefficients(flow_scaling, sig)
    inv = k.InversionResult("ddpm", sig, a, b, 0, 0, x0, [None] * 100)
    level = inv.level_for_noise(4.55)
    s = float(sig[level])
    assert s / (1 - s) <= 4.55 * (1 + 1e-6)
    assert float(sig[level - 1]) / (1 - float(sig[level - 1])) > 4.55


@pytest.mark.parametrize("bad,needle", [
    (torch.tensor([1.0]), "at least 2"),
    (torch.tensor([1.0, 0.5, 0.7, 0.0]), "decreasing"),
    (torch.tensor([1.0, float("nan"), 0.0]), "non-finite"),
    (torch.tensor([[1.0, 0.0]]), "1-D"),
])
def test_validate_sigmas_rejects_bad_schedules(bad, needle):
    with pytest.raises(ParameterError, match=needle):
        k.validate_sigmas(bad)


def test_invert_rejects_bad_rule_and_first_step():
    x0 = torch.zeros(1, 1, 2, 2)
    sig = schedule("ve", 5)
    a, b = k.path_coefficients(ve_scaling, sig)
    with pytest.raises(ParameterError, match="rule"):
        k.invert(lambda x, s: x, x0, sig, a, b, "euler", 0)
    with pytest.raises(ParameterError, match="first_step"):
        k.invert(lambda x, s: x, x0, sig, a, b, "ddpm", 0, first_step=5)


def test_negative_prompt_edit_formula():
    null, remove = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    assert torch.equal(negative_prompt_edit(null, remove, 1.0), null)
    assert torch.allclose(negative_prompt_edit(null, remove, 15.0), remove + 15 * (null - remove))
