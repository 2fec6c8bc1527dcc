"""The test-bed trainers' shared pieces (``bench/testbed/training.py``): the EMA, the loss log and the training loop."""

from __future__ import annotations

import json
import pathlib
import sys

import torch

BENCH_DIR = pathlib.Path(__file__).resolve().parent.parent / "bench"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from testbed import training  # noqa: E402
from testbed.training import LossLog, ema_update, optimiser_step, warmup_cosine_lr  # noqa: E402


def test_ema_update_ramps_its_decay_and_caps_it():
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = {"weight": torch.zeros(1, 2)}
    ema_update(ema, net, step=0, max_decay=0.99)  # decay 1/10: ema = 0.9 * 1
    assert torch.allclose(ema["weight"], torch.full((1, 2), 0.9))
    ema_update(ema, net, step=10_000, max_decay=0.99)  # capped at 0.99: 0.99 * 0.9 + 0.01
    assert torch.allclose(ema["weight"], torch.full((1, 2), 0.99 * 0.9 + 0.01))


def test_loss_log_writes_the_mean_of_each_block_of_steps(tmp_path):
    path = tmp_path / "loss_log.jsonl"
    log = LossLog(path, every=2, phase=3)
    for step, value in enumerate([1.0, 3.0, 5.0, 7.0, 9.0], start=1):
        log.add(step, 10.0 * step, 1e-3, torch.tensor(value), torch.tensor(value - 1), torch.tensor(value + 1))
    log.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]  # step 5 is not a full block yet
    assert [r["loss"] for r in rows] == [2.0, 6.0]
    assert [r["loss_clean_null"] for r in rows] == [1.0, 5.0] and rows[1]["loss_rain_rain"] == 7.0
    assert all(r["phase"] == 3 for r in rows) and log.first == rows[0] and log.last == rows[1]
    appended = LossLog(path, every=1, append=True)
    appended.add(1, 1.0, 1e-3, torch.tensor(0.5), torch.tensor(0.5), torch.tensor(0.5))
    appended.close()
    assert len(path.read_text().splitlines()) == 3


def test_warmup_cosine_lr_warms_up_then_falls_to_a_tenth():
    assert warmup_cosine_lr(1.0, step=0, warmup=10, frac=0.0) == 0.1  # step 1 of a 10-step warm-up
    assert warmup_cosine_lr(1.0, step=50, warmup=10, frac=0.0) == 1.0
    assert abs(warmup_cosine_lr(1.0, step=50, warmup=10, frac=0.5) - 0.55) < 1e-12
    assert abs(warmup_cosine_lr(1.0, step=50, warmup=10, frac=1.0) - 0.1) < 1e-12


def test_optimiser_step_scales_each_group_by_its_mult_and_clips():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    net = torch.nn.Module()
    net.a, net.b = a, b
    opt = torch.optim.SGD([{"params": [a], "mult": 3.0}, {"params": [b]}], lr=0.0)
    optimiser_step(opt, net, (a + b).sum() * 100.0, lr=0.5)  # gradient (100, 100), clipped to norm 1
    g = 1 / 2 ** 0.5
    assert torch.allclose(a.detach(), torch.tensor([-1.5 * g])) and torch.allclose(b.detach(), torch.tensor([-0.5 * g]))


def test_train_for_budget_stops_at_the_budget_and_checkpoints_on_schedule(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(training.time, "time", lambda: clock[0])
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    log = LossLog(tmp_path / "log.jsonl", every=2)
    saved = []

    def losses():  # one second of "work" per step; the loss pulls the weight toward 1
        clock[0] += 1.0
        loss = (net.weight - 1.0).pow(2).sum()
        return loss, loss, loss

    steps = training.train_for_budget(3.5 / 60, 1.5 / 60, base_lr=0.1, warmup=2, opt=opt, net=net, ema=ema,
                                      ema_decay=0.5, log=log, t_start=90.0, losses=losses,
                                      checkpoint=lambda step, t_train, final: saved.append((step, t_train, final)))
    assert steps == 4  # the 4th step ends at 4 s > 3.5 s
    assert saved == [(2, 100.0, False), (4, 100.0, False), (4, 100.0, True)]  # each 1.5 s past the last save
    assert log.file.closed and [r["step"] for r in log.rows] == [2, 4]
    assert log.rows[0]["lr"] == warmup_cosine_lr(0.1, 1, 2, 1 / 3.5) and log.rows[0]["wall_s"] == 12.0
    assert 0.0 < float(ema["weight"]) < float(net.weight.detach()) < 1.0  # trained toward 1, the EMA lagging behind


def test_prompt_embeddings_are_fixed_by_their_seeds():
    a = training.prompt_embeddings(3, 5, {"null": 1, "rain": 2})
    b = training.prompt_embeddings(3, 5, {"rain": 2})
    assert a["null"].shape == (3, 5) and torch.equal(a["rain"], b["rain"]) and not torch.equal(a["null"], a["rain"])


def test_prompt_batch_puts_the_null_rows_first_and_save_ema_writes_the_ema_not_the_net(tmp_path):
    prompts = {"null": torch.zeros(2, 3), "rain": torch.ones(2, 3)}
    ctx = training.prompt_batch(prompts, pairs=2)
    assert ctx.shape == (4, 2, 3) and ctx[:2].sum() == 0 and ctx[2:].sum() == 12
    from safetensors.torch import load_file

    shadow = torch.nn.Linear(2, 1, bias=False)
    ema = {"weight": torch.tensor([[0.25, -1.5]])}
    training.save_ema(shadow, ema, tmp_path / "w.safetensors")
    written = load_file(str(tmp_path / "w.safetensors"))
    assert written["weight"].dtype == torch.float16 and written["weight"].float().tolist() == [[0.25, -1.5]]
