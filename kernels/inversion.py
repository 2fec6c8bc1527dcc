"""Edit-friendly DDPM inversion and its replay, for any Gaussian noise path.

Notation. A diffusion model's noisy latent at noise level sigma is
``x = a(sigma) * x0 + b(sigma) * eps`` with ``eps ~ N(0, I)``:

* EPS and V-prediction models in ComfyUI's k-diffusion form: ``a = 1, b = sigma``
  (variance exploding; V-prediction only changes what the network outputs);
* CONST / rectified-flow models (Wan, HunyuanVideo, LTXV): ``a = 1 - sigma, b = sigma``.

The pack reads ``a`` and ``b`` off the host's own ``noise_scaling`` (see
:func:`path_coefficients`), so any model sampling that is such a path works
without a per-family branch. Dividing by ``a`` turns every path into the
variance-exploding one with ``s = b / a`` (the "equivalent EPS sigma"; flow
sigma 0.82 is s = 4.55, the official ZSVD start on CogVideoX).

A step from ``sigma`` to ``sigma' < sigma`` given the model's clean-latent
prediction ``x0_hat`` is ``x' = c_x0 * x0_hat + c_x * x + std * z`` (:class:`StepCoefficients`).
With ``r = s' / s`` the three rules are:

``ddpm``  the DDPM posterior q(x' | x, x0 = x0_hat) (Ho et al. 2020, eq. 6-7),
          written in the VE form and mapped back through ``a'``:
          ``x' = a' x0_hat + (a'/a) r^2 (x - a x0_hat) + b' sqrt(1 - r^2) z``.
          For EPS/V models (a = 1) this is exactly ComfyUI's ``euler_ancestral``
          step with eta = 1 and its ``ddpm`` sampler step (sigma_down = s'^2/s,
          sigma_up = s' sqrt(1 - s'^2/s^2)); for flow models it is the same
          posterior in the equivalent EPS-sigma form.
``zsvd``  what the official ZSVD code does with CogVideoX's DDIM scheduler (which
          ignores eta): the deterministic DDIM mean plus noise of the DDPM
          posterior's size, ``x' = a' x0_hat + (b'/b)(x - a x0_hat) + b' sqrt(1 - r^2) z``
          (for a = 1: x' = x0_hat + sigma' (x - x0_hat)/sigma + sigma_up z).
``ddim``  the deterministic DDIM step (Song et al. 2021, eq. 12 with eta = 0):
          ``x' = a' x0_hat + (b'/b)(x - a x0_hat)``.

Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov, Michaeli, CVPR 2024,
eq. 3-5): draw ``x_t = a_t x0 + b_t eps_t`` with independent ``eps_t`` for every
level of the schedule, then for each step recover the noise the step must have
used, ``z_t = (x_{t-1} - mu_t(x_t)) / std_t``. Replaying the same rule with the
stored ``z_t`` and the same model reproduces every ``x_t`` and so ``x0``. A
step with ``std = 0`` (the last step to sigma 0, and every ``ddim`` step)
stores its residual ``x_{t-1} - mu_t(x_t)`` instead, which makes replay exact
there too (:data:`LAST_STEPS` "exact"), except under ``zsvd``: the official
ZSVD loop (CogVideoX's DDIM scheduler with ``set_alpha_to_one``) gives its last
step variance 0, zeroes its ``z`` and returns the guided clean prediction at
the last level, so rule ``zsvd`` stores nothing for that step and makes no
model call for it; its replay reproduces every level above the last exactly
and ends on the prediction there. The ``eps_t`` are regenerated from
``(seed, t)``, so only the ``z_t`` are stored.

DDIM inversion (``ddim``; Song et al. 2021, sec. 4.3, used by TDM) runs the
deterministic step backwards: ``x_{t} = a_t x0_hat + b_t eps_hat(x_{t-1})``
with the prediction taken at the lower level; the trajectory is stored because
it cannot be regenerated from a seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch

from .errors import ParameterError

RULES = ("ddpm", "zsvd", "ddim")
LAST_STEPS = ("exact", "prediction")
"""How a replay ends at sigma 0: ``exact`` adds the stored residual (reconstruction is exact), ``prediction``
returns the (edited) clean prediction at the last level, as the official ZSVD loop does."""

# The per-level noise seeds: eps_t is drawn on the CPU from this, so the same
# (seed, level) gives the same noise on every device.
_SEED_STRIDE = 1_000_003


@dataclasses.dataclass(frozen=True)
class StepCoefficients:
    """``x' = c_x0 * x0_hat + c_x * x + std * z`` for one step."""

    c_x0: float
    c_x: float
    std: float


def path_coefficients(noise_scaling: Callable, sigmas: Sequence[float]) -> tuple[list[float], list[float]]:
    """Read ``a(sigma)`` and ``b(sigma)`` off a host ``noise_scaling(sigma, noise, latent)``.

    ``noise_scaling(sigma, 1, 0) = b`` and ``noise_scaling(sigma, 0, 1) = a`` for
    any path of the form ``a x0 + b eps``. Checked against linearity at one more
    point so that a model sampling that is not such a path is refused.

    Args:
        noise_scaling: the host model sampling's ``noise_scaling(sigma, noise, latent)``.
        sigmas: the noise levels to read.

    Returns:
        ``(a, b)``: one ``a(sigma)`` and one ``b(sigma)`` per sigma.

    Raises:
        ParameterError: ``noise_scaling`` is not of the form ``a x0 + b noise`` (with ``b >= 0``) at a sigma.
    """
    a_list, b_list = [], []
    one = torch.ones(1, dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    for s in sigmas:
        sig = torch.tensor(float(s), dtype=torch.float64)
        b = float(noise_scaling(sig, one.clone(), zero.clone()))
        a = float(noise_scaling(sig, zero.clone(), one.clone()))
        mixed = float(noise_scaling(sig, one.clone() * 2.0, one.clone() * 3.0))
        if not math.isclose(mixed, 3.0 * a + 2.0 * b, rel_tol=1e-6, abs_tol=1e-9) or b < 0:
            raise ParameterError("noise_scaling", f"at sigma {float(s):.4g} is not of the form a*x0 + b*noise",
                                 "use an EPS, V-prediction or flow (CONST) model")
        a_list.append(a)
        b_list.append(b)
    return a_list, b_list


def step_coefficients(rule: str, a: float, b: float, a_next: float, b_next: float) -> StepCoefficients:
    """Coefficients of one step from level (a, b) to (a_next, b_next); see the module docstring.

    Args:
        rule: one of :data:`RULES`.
        a: ``a`` of the level the step starts at.
        b: ``b`` of the level the step starts at (above 0).
        a_next: ``a`` of the level the step lands on (above 0 unless ``b_next`` is 0).
        b_next: ``b`` of the level the step lands on.

    Returns:
        The step's :class:`StepCoefficients` (``c_x0``, ``c_x``, ``std``).

    Raises:
        ParameterError: ``rule`` is unknown, ``b`` is not above 0, or ``a_next`` is not above 0 for a step that
            does not land on ``b_next == 0``.
    """
    if rule not in RULES:
        raise ParameterError("rule", f"is '{rule}'", f"choose one of {', '.join(RULES)}")
    if b <= 0:
        raise ParameterError("b", f"is {b}: a step must start at a noise level above zero",
                             "start the step at a sigma above 0")
    if b_next == 0:
        # every rule lands on the prediction itself: x' = a' x0_hat
        return StepCoefficients(c_x0=a_next, c_x=0.0, std=0.0)
    if a_next <= 0:
        raise ParameterError("a_next", f"is {a_next}: a step cannot land on pure noise",
                             "end the step at a noise level below pure noise (a_next > 0)")
    # r = s'/s with s = b/a; a == 0 (flow sigma 1) means s = inf and r = 0
    r = (b_next * a) / (a_next * b)
    r2 = min(r * r, 1.0)
    if rule == "ddpm":
        c_x = (a_next / a) * r2 if a > 0 else 0.0
        std = b_next * math.sqrt(max(0.0, 1.0 - r2))
    else:
        c_x = b_next / b
        std = b_next * math.sqrt(max(0.0, 1.0 - r2)) if rule == "zsvd" else 0.0
    return StepCoefficients(c_x0=a_next - c_x * a, c_x=c_x, std=std)


def apply_step(x: torch.Tensor, x0_hat: torch.Tensor, coeffs: StepCoefficients, stored: torch.Tensor | None) -> torch.Tensor:
    """One replay step: the rule's mean plus the stored noise (``std * z``) or residual (std 0).

    Args:
        x: the latent at the step's start.
        x0_hat: the model's clean-latent prediction there.
        coeffs: the step's :class:`StepCoefficients`.
        stored: the step's stored noise ``z`` or residual, or None.

    Returns:
        The latent at the step's end.
    """
    out = x0_hat * coeffs.c_x0
    if coeffs.c_x != 0.0:
        out = out + x * coeffs.c_x
    if stored is not None:
        stored = stored.to(device=x.device, dtype=x.dtype)
        out = out + (stored * coeffs.std if coeffs.std > 0 else stored)
    return out


def level_noise(seed: int, level: int, shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """``eps_t`` of the inversion: standard normal, drawn on the CPU from ``(seed, level)``.

    Args:
        seed: the inversion's seed.
        level: the noise level's index.
        shape: the latent's shape.
        dtype: the result's dtype.
        device: where the result goes (it is drawn on the CPU).

    Returns:
        The level's noise, the same for the same ``(seed, level)``.
    """
    gen = torch.Generator(device="cpu").manual_seed((int(seed) * _SEED_STRIDE + int(level)) % (2**63))
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def noisy_level(x0: torch.Tensor, a: float, b: float, seed: int, level: int) -> torch.Tensor:
    """``x_t = a_t x0 + b_t eps_t`` (edit-friendly inversion eq. 3), regenerated from the seed.

    Args:
        x0: the clean latent.
        a: ``a_t`` of the level.
        b: ``b_t`` of the level.
        seed: the inversion's seed.
        level: the level's index (:func:`level_noise`).

    Returns:
        The noisy latent ``x_t``, ``x0``'s shape, dtype and device.
    """
    if b == 0:
        return x0 * a
    return x0 * a + level_noise(seed, level, x0.shape, x0.dtype, x0.device) * b


@dataclasses.dataclass
class InversionResult:
    """What replay needs, and what it was made from.

    ``stored[i]`` belongs to the step from level i to i+1: ``z_i`` where the
    step's std is positive, else the residual. Entries before ``first_step`` are
    ``None`` (never computed). ``trajectory`` holds the ``ddim`` path (level ->
    latent) and is empty for the stochastic rules.
    """

    rule: str
    sigmas: torch.Tensor  # float32 [N+1], decreasing
    a: list[float]
    b: list[float]
    seed: int
    first_step: int
    x0: torch.Tensor  # the inverted latent in the model's space, on the CPU
    stored: list[torch.Tensor | None]
    trajectory: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    model_calls: int = 0
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def coefficients(self, i: int) -> StepCoefficients:
        return step_coefficients(self.rule, self.a[i], self.b[i], self.a[i + 1], self.b[i + 1])

    def start_latent(self, step: int, device=None, dtype=None) -> torch.Tensor:
        """The latent at level ``step``, where replay from that step begins."""
        if step < self.first_step or step > self.steps:
            raise ParameterError("step", f"is {step}, but this inversion covers steps {self.first_step}..{self.steps}",
                                 f"start at step {self.first_step} or later, or invert from an earlier first_step")
        x0 = self.x0.to(device=device or self.x0.device, dtype=dtype or self.x0.dtype)
        if self.rule == "ddim":
            return self.trajectory[step].to(device=x0.device, dtype=x0.dtype)
        return noisy_level(x0, self.a[step], self.b[step], self.seed, step)

    def stored_for(self, i: int) -> torch.Tensor | None:
        return self.stored[i] if 0 <= i < len(self.stored) else None

    def level_for_noise(self, s_ve: float) -> int:
        """The first level whose equivalent EPS sigma b/a is at or below ``s_ve``."""
        for i, (a, b) in enumerate(zip(self.a, self.b)):
            s = math.inf if a == 0 else b / a
            if s <= s_ve * (1 + 1e-6):
                return i
        return self.steps


def validate_sigmas(sigmas: torch.Tensor, name: str = "sigmas") -> torch.Tensor:
    """A schedule must be 1-D, finite, non-negative, strictly decreasing, with at least one step.

    Args:
        sigmas: the schedule.
        name: the parameter name a :class:`ParameterError` names.

    Returns:
        ``sigmas``, checked.

    Raises:
        ParameterError: naming ``name``, for a schedule that is not 1-D with at least 2 values, has negative or
            non-finite values, or is not strictly decreasing.
    """
    if not isinstance(sigmas, torch.Tensor) or sigmas.dim() != 1 or sigmas.numel() < 2:
        raise ParameterError(name, "must be a 1-D schedule with at least 2 values (1 step)",
                         "connect a scheduler node such as BasicScheduler with steps >= 1")
    s = sigmas.detach().to("cpu", torch.float64)
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ParameterError(name, "contains negative or non-finite values", "connect a scheduler node's output unchanged")
    if not (s[1:] < s[:-1]).all():
        bad = int(torch.nonzero(s[1:] >= s[:-1])[0]) + 1
        raise ParameterError(name, f"are not strictly decreasing (value {bad} is {float(s[bad]):.4g} after "
                         f"{float(s[bad - 1]):.4g})", "use a scheduler's output; do not flip or concatenate schedules")
    return sigmas


def invert(
    denoise: Callable[[torch.Tensor, float], torch.Tensor],
    x0: torch.Tensor,
    sigmas: torch.Tensor,
    a: Sequence[float],
    b: Sequence[float],
    rule: str,
    seed: int,
    first_step: int = 0,
    sigma_floor: float = 1e-4,
    store_dtype: torch.dtype | None = None,
    on_step: Callable[[int, int, torch.Tensor], None] | None = None,
) -> InversionResult:
    """Invert ``x0`` over ``sigmas`` from level ``first_step`` on.

    ``denoise(x, sigma)`` returns the model's clean-latent prediction (the
    guider's output). ``on_step(done, total, x0_hat)`` is called after every
    model call (progress, previews, interrupt). Model calls: one per step from
    ``first_step`` for ``ddpm``/``zsvd``; for ``ddim`` one per step plus one for
    the final residual. ``sigma_floor`` is where the ``ddim`` rule evaluates the
    model for a step that starts at sigma 0 (there is no prediction at 0).

    Args:
        denoise: ``denoise(x, sigma)``, the clean-latent prediction.
        x0: the clean latent to invert.
        sigmas: the schedule (decreasing).
        a: ``a(sigma)`` per sigma (:func:`path_coefficients`).
        b: ``b(sigma)`` per sigma.
        rule: one of :data:`RULES`.
        seed: the seed of the levels' noise.
        first_step: the first level inverted.
        sigma_floor: the sigma the ``ddim`` rule evaluates at instead of 0.
        store_dtype: the dtype the stored noise and residuals are kept in (None: the latent's).
        on_step: ``on_step(done, total, x0_hat)`` after every model call, or None.

    Returns:
        The :class:`InversionResult`: the schedule, path and seed, the stored noise and residuals per step and
        (``ddim``) the trajectory.

    Raises:
        ParameterError: ``sigmas`` is not a valid schedule (:func:`validate_sigmas`), ``rule`` is unknown or
            ``first_step`` is outside the schedule.
    """
    validate_sigmas(sigmas)
    if rule not in RULES:
        raise ParameterError("rule", f"is '{rule}'", f"choose one of {', '.join(RULES)}")
    n = len(sigmas) - 1
    if not 0 <= first_step < n:
        raise ParameterError("first_step", f"is {first_step}, but the schedule has {n} steps",
                             f"use a value from 0 to {n - 1}")
    store_dtype = store_dtype or x0.dtype
    sig = [float(s) for s in sigmas]
    result = InversionResult(rule=rule, sigmas=sigmas.detach().to("cpu", torch.float32), a=list(a), b=list(b),
                             seed=int(seed), first_step=first_step, x0=x0.detach().to("cpu"), stored=[None] * n)
    # rule zsvd ends like the official loop: no residual for a last step that lands on sigma 0 (see module docstring)
    official_last = rule == "zsvd" and b[n] == 0
    total = n - first_step + (1 if rule == "ddim" else 0) - (1 if official_last else 0)
    calls = 0
    copies = _HostCopies()

    def predict(x, sigma):
        nonlocal calls
        x0_hat = denoise(x, sigma)
        calls += 1
        if on_step is not None:
            on_step(calls, total, x0_hat)
        return x0_hat

    if rule in ("ddpm", "zsvd"):
        x_next = None
        top = n - 2 if official_last else n - 1
        for i in range(top, first_step - 1, -1):  # any order works; descending reuses x_{i+1}
            x_i = noisy_level(x0, a[i], b[i], seed, i)
            if x_next is None:
                x_next = noisy_level(x0, a[i + 1], b[i + 1], seed, i + 1)
            coeffs = step_coefficients(rule, a[i], b[i], a[i + 1], b[i + 1])
            x0_hat = predict(x_i, sig[i])
            mean = apply_step(x_i, x0_hat, coeffs, None)
            d = x_next - mean
            result.stored[i] = copies.to_host(d / coeffs.std if coeffs.std > 0 else d, store_dtype)
            x_next = x_i
    else:
        # DDIM inversion: walk up from x_N using the prediction at the lower level.
        x = x0 * a[n] if b[n] == 0 else noisy_level(x0, a[n], b[n], seed, n)
        result.trajectory[n] = copies.to_host(x.detach(), x.dtype)
        for i in range(n - 1, first_step - 1, -1):
            s_eval = sig[i + 1] if b[i + 1] > 0 else max(sig[i + 1], sigma_floor)
            a_e, b_e = (a[i + 1], b[i + 1]) if b[i + 1] > 0 else _path_at_floor(a, b, sig, n, s_eval)
            x0_hat = predict(x, s_eval)
            eps_hat = (x - x0_hat * a_e) / b_e
            x = x0_hat * a[i] + eps_hat * b[i]
            result.trajectory[i] = copies.to_host(x.detach(), x.dtype)
        copies.wait()
        # final residual: the deterministic last step from the inverted path back to x0
        last = n - 1
        coeffs = step_coefficients(rule, a[last], b[last], a[n], b[n])
        x_last = result.trajectory[last].to(device=x0.device, dtype=x0.dtype)
        x0_hat = predict(x_last, sig[last])
        target = x0 * a[n] if b[n] == 0 else result.trajectory[n].to(device=x0.device, dtype=x0.dtype)
        result.stored[last] = copies.to_host(target - apply_step(x_last, x0_hat, coeffs, None), store_dtype)
    copies.wait()
    result.model_calls = calls
    return result


class _HostCopies:
    """Device-to-host copies of the inversion's per-step state that do not stall the device.

    A CUDA tensor is copied with ``non_blocking=True`` into pinned host memory
    (the model keeps running while the copy is in flight); :meth:`wait`
    synchronises once, before any copy is read. CPU tensors are plain copies.
    """

    def __init__(self):
        self._pending = False

    def to_host(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if t.device.type != "cuda":
            return t.to("cpu", dtype)
        host = torch.empty(t.shape, dtype=dtype, device="cpu", pin_memory=True)
        host.copy_(t.to(dtype), non_blocking=True)
        self._pending = True
        return host

    def wait(self) -> None:
        if self._pending:
            torch.cuda.current_stream().synchronize()
            self._pending = False


def _path_at_floor(a, b, sig, n, s_eval):
    """(a, b) at a small sigma: interpolated between sigma 0 (a_N, 0) and the next level up."""
    t = s_eval / sig[n - 1]
    return a[n] + (a[n - 1] - a[n]) * t, b[n - 1] * t


def replay(
    denoise: Callable[[torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    coeffs: Sequence[StepCoefficients],
    stored: Sequence[torch.Tensor | None],
    on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run the steps ``x <- c_x0 x0_hat + c_x x + std z_j`` (edit-friendly inversion eq. 5).

    ``denoise(x, j)`` is the (possibly edited) prediction at step j; with the
    inversion's own prediction this reproduces the inverted latents.

    Args:
        denoise: ``denoise(x, j)``, the prediction at step ``j``.
        x: the latent the replay starts from.
        coeffs: each step's :class:`StepCoefficients`.
        stored: each step's stored noise or residual (None for none).
        on_step: ``on_step(j, x0_hat, x)`` after each prediction (``x`` the latent the step starts from), or None.

    Returns:
        The latent after the last step.
    """
    for j, (c, s) in enumerate(zip(coeffs, stored)):
        x0_hat = denoise(x, j)
        if on_step is not None:
            on_step(j, x0_hat, x)
        x = apply_step(x, x0_hat, c, s)
    return x


def replay_schedule_check(inv: InversionResult, sigmas: torch.Tensor, start: int) -> None:
    """The sampling schedule must be the inversion's from ``start`` on (stochastic rules).

    Args:
        inv: the inversion.
        sigmas: the sampling schedule.
        start: the step the sampling starts at.

    Returns:
        None.

    Raises:
        ParameterError: ``sigmas`` do not match the inversion's schedule from ``start``.
    """
    expected = inv.sigmas[start:]
    got = sigmas.detach().to("cpu", torch.float32)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-7):
        raise ParameterError("sigmas", f"do not match the inversion's schedule from step {start} "
                             f"({len(got) - 1} steps given, {len(expected) - 1} expected)",
                             "connect the SIGMAS output of ZSVR Inversion Sampler to the sampler unchanged")


def ddim_start_level(inv: InversionResult, sigmas: torch.Tensor) -> int:
    """The inverted ``ddim`` level at which a schedule starting at ``sigmas[0]`` begins (TDM hand-over).

    Args:
        inv: a ``ddim`` inversion.
        sigmas: the sampling schedule.

    Returns:
        The index of the inverted level equal to ``sigmas[0]``.

    Raises:
        ParameterError: ``sigmas`` start at a sigma that is not an inverted level.
    """
    first = float(sigmas[0])
    for level, s in enumerate(inv.sigmas.tolist()):
        if level in inv.trajectory and math.isclose(s, first, rel_tol=1e-5, abs_tol=1e-7):
            return level
    levels = ", ".join(f"{inv.sigmas[i]:.4g}" for i in sorted(inv.trajectory))
    raise ParameterError("sigmas", f"start at {first:.4g}, which is not a level of the DDIM inversion ({levels})",
                         "start the sampling schedule at an inverted level (e.g. the SIGMAS output of this node)")


def plan_replay(inv: InversionResult, sigmas: torch.Tensor, start: int, path=None,
                last_step: str = "exact") -> tuple[int, list[StepCoefficients], list[torch.Tensor | None]]:
    """The start level, step coefficients and stored noise/residuals of a replay over ``sigmas``.

    Stochastic rules (``ddpm``, ``zsvd``) replay the inversion's own schedule from
    ``start`` (their noise is per step). ``ddim`` accepts any schedule whose first
    sigma is an inverted level (``path`` = its ``(a, b)``; TDM inverts in 10 steps
    and samples in 32): the inverted latent there is handed over, and the final
    residual is added only when the last step is the inversion's.
    ``last_step`` (:data:`LAST_STEPS`): ``prediction`` drops the residual of a
    last step that lands on sigma 0; rule ``zsvd`` never stores one.

    Args:
        inv: the inversion.
        sigmas: the sampling schedule.
        start: the start step (stochastic rules).
        path: ``(a, b)`` lists for ``sigmas`` (``ddim`` only).
        last_step: ``"exact"`` or ``"prediction"``.

    Returns:
        ``(start level, step coefficients, stored noise or residual per step)``.

    Raises:
        ParameterError: ``last_step`` is unknown, ``path`` is missing for a ``ddim`` replay, or ``sigmas`` do not
            fit the inversion (:func:`replay_schedule_check`, :func:`ddim_start_level`).
    """
    if last_step not in LAST_STEPS:
        raise ParameterError("last_step", f"is {last_step!r}", f"use one of {', '.join(LAST_STEPS)}")
    validate_sigmas(sigmas)
    if inv.rule == "ddim":
        if path is None:
            raise ParameterError("path", "is required for a ddim replay", "pass the (a, b) lists of sigmas")
        a, b = path
        start = ddim_start_level(inv, sigmas)
        coeffs = [step_coefficients("ddim", a[j], b[j], a[j + 1], b[j + 1]) for j in range(len(sigmas) - 1)]
        same_tail = len(sigmas) >= 2 and math.isclose(float(sigmas[-2]), float(inv.sigmas[-2]), rel_tol=1e-6) \
            and float(sigmas[-1]) == float(inv.sigmas[-1])
        stored = [None] * (len(sigmas) - 2) + [inv.stored_for(inv.steps - 1) if same_tail else None]
        lands_on_zero = b[-1] == 0
    else:
        replay_schedule_check(inv, sigmas, start)
        coeffs = [inv.coefficients(i) for i in range(start, inv.steps)]
        stored = [inv.stored_for(i) for i in range(start, inv.steps)]
        lands_on_zero = inv.b[-1] == 0
    if last_step == "prediction" and lands_on_zero and stored:
        stored[-1] = None
    return start, coeffs, stored
