"""The test-bed trainers' shared pieces (``bench/testbed/training.py``): the EMA and the loss log."""

from __future__ import annotations

import json
import pathlib
import sys

import torch

BENCH_DIR = pathlib.Path(__file__).resolve().parent.parent / "bench"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from testbed.training import LossLog, ema_update  # noqa: E402


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
