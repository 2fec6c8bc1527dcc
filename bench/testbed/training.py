"""What the two test-bed trainers share: the fixed prompts, the weights' EMA, the loss log, the learning-rate
schedule, the optimiser step, the fp16 weight file and the wall-clock training loop that ties them together."""

from __future__ import annotations

import json
import math
import os
import pathlib
import time

import torch


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], net: torch.nn.Module, step: int, max_decay: float) -> None:
    """Move the EMA copy ``ema`` of ``net``'s weights toward them, with the decay ramped as
    ``min(max_decay, (1 + step) / (10 + step))`` so that early steps are not frozen out."""
    decay = min(max_decay, (1 + step) / (10 + step))
    for k, v in net.state_dict().items():
        ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)


class LossLog:
    """Mean losses over every ``every`` steps, one JSON line each in ``path`` (``fields`` added to each line).

    ``add`` takes the step's total loss and the mean losses of its clean/null and rainy/"rain" halves.
    """

    def __init__(self, path: pathlib.Path, every: int, append: bool = False, **fields):
        self.file = open(path, "a" if append else "w")
        self.every, self.fields = every, fields
        self.rows: list[dict] = []
        self._acc: list[tuple[float, float, float]] = []

    def add(self, step: int, wall_s: float, lr: float, loss: torch.Tensor, clean: torch.Tensor,
            rain: torch.Tensor) -> None:
        self._acc.append((float(loss.detach()), float(clean.detach()), float(rain.detach())))
        if step % self.every:
            return
        n = len(self._acc)
        row = {**self.fields, "step": step, "wall_s": round(wall_s, 1), "lr": lr,
               "loss": sum(a[0] for a in self._acc) / n, "loss_clean_null": sum(a[1] for a in self._acc) / n,
               "loss_rain_rain": sum(a[2] for a in self._acc) / n}
        self.rows.append(row)
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        self._acc = []

    @property
    def last(self) -> dict | None:
        return self.rows[-1] if self.rows else None

    @property
    def first(self) -> dict | None:
        return self.rows[0] if self.rows else None

    def close(self) -> None:
        self.file.close()


def warmup_cosine_lr(base: float, step: int, warmup: int, frac: float) -> float:
    """The learning rate at ``step``: linear warm-up over ``warmup`` steps, then a cosine from ``base`` down to
    10 % of it over the budget (``frac``: the share of the wall-clock budget spent)."""
    return base * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def optimiser_step(opt: torch.optim.Optimizer, net: torch.nn.Module, loss: torch.Tensor, lr: float) -> None:
    """One step at ``lr`` (times a parameter group's ``mult``, if it has one), gradients clipped at norm 1."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("mult", 1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()


def start_run(seed: int, out: pathlib.Path) -> float:
    """What every training run starts with: one CPU thread (the committed weights' conditions), the global seed,
    the output folder made; returns the start time (the wall clock the records count from)."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    return time.time()


def ema_copy(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Put ``net`` in training mode and return the EMA's starting point: a detached copy of its weights."""
    net.train()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def prompt_embeddings(tokens: int, width: int, seeds: dict[str, int]) -> dict[str, torch.Tensor]:
    """The fixed prompts, name -> ``[tokens, width]`` standard normal drawn from the name's seed in ``seeds``."""
    return {name: torch.randn(tokens, width, generator=torch.Generator().manual_seed(seed))
            for name, seed in seeds.items()}


def write_prompts(prompts: dict[str, torch.Tensor], path: pathlib.Path) -> None:
    """Save the fixed prompts beside the weights (safetensors), for the host nodes that feed them to a graph."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in prompts.items()}, str(path))


def prompt_batch(prompts: dict[str, torch.Tensor], pairs: int) -> torch.Tensor:
    """The text batch of a training step: ``pairs`` rows of the null prompt (the clean twins), then ``pairs`` of
    "rain" (the rainy twins)."""
    return torch.cat([prompts["null"][None].expand(pairs, -1, -1), prompts["rain"][None].expand(pairs, -1, -1)])


def save_ema(shadow: torch.nn.Module, ema: dict[str, torch.Tensor], path: pathlib.Path) -> None:
    """Write the EMA weights: loaded into ``shadow`` (a fresh network of the trained one's shape), saved fp16."""
    shadow.load_state_dict(ema)
    save_weights(shadow, path)


def save_weights(module: torch.nn.Module, path: pathlib.Path) -> None:
    """Write a state dict as fp16 safetensors (atomically)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def train_for_budget(budget_min: float, save_every_min: float, *, base_lr: float, warmup: int,
                     opt: torch.optim.Optimizer, net: torch.nn.Module, ema: dict[str, torch.Tensor],
                     ema_decay: float, log: LossLog, t_start: float, losses, checkpoint) -> int:
    """Train until ``budget_min`` minutes of wall time have passed; return the steps taken.

    Each step: the learning rate of :func:`warmup_cosine_lr` (warm-up ``warmup`` steps, cosine over the share of
    the budget spent), ``losses()`` -> (loss, mean loss of the clean/null half, of the rainy/"rain" half) on a fresh
    batch, :func:`optimiser_step`, :func:`ema_update` and a :class:`LossLog` entry (wall time since ``t_start``).
    ``checkpoint(step, t_train, final)`` writes the EMA weights and the run's record every ``save_every_min``
    minutes and once at the end (``t_train``: when the loop started); the log is closed after the last one.
    """
    budget = budget_min * 60.0
    step, last_save = 0, time.time()
    t_train = time.time()
    while time.time() - t_train < budget:
        frac = (time.time() - t_train) / budget
        lr = warmup_cosine_lr(base_lr, step, warmup, frac)
        loss, clean, rain = losses()
        optimiser_step(opt, net, loss, lr)
        step += 1
        ema_update(ema, net, step, ema_decay)
        log.add(step, time.time() - t_start, lr, loss, clean, rain)
        if time.time() - last_save > save_every_min * 60:
            checkpoint(step, t_train, final=False)
            last_save = time.time()
    checkpoint(step, t_train, final=True)
    log.close()
    return step
