"""Per-step cost of ZSVD's switched edit vs plain two-row CFG on CogVideoX (issue 4's benchmark).

Builds diffusers' ``CogVideoXTransformer3DModel`` with random weights (the
CogVideoX-2b configuration by default: 30 blocks, 30 heads x 64, text 226 x 4096;
latent 13 x 60 x 90 = 49 frames at 480 x 720), installs the pack's
``SwitchProcessor`` on every block, and times transformer forwards only:

* ``cfg``: plain two-row CFG, one forward at batch 2 (null and remove rows);
* ``switched``: the pack's edit step, a null pass then a remove pass at batch 1,
  blocks 0-3,15-29 switched (the remove pass's video queries read the null
  pass's text keys/values: two attention calls in switched blocks, never a
  second full attention).

Prints a table and writes ``bench/results/switch_overhead_<device>.json`` with
``switch_overhead`` = switched / cfg. Weights are random: figures are costs,
not quality. ``--small`` shrinks everything to check the script on a CPU.

    python bench/bench_switch_overhead.py               # GPU, bf16, real size
    python bench/bench_switch_overhead.py --small       # CPU smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import runpy
import statistics
import sys
import time
import types

import torch

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
RESULTS = PACK_DIR / "bench" / "results"
ZSVR = runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path


def _import_switch():
    """The CogVideoX switch module and the switch protocol without ComfyUI: ``zsvr`` itself is the pack
    (``pack_import.py``) and ``zsvr.nodes`` imports no ComfyUI code, but the ``zsvr.nodes.adapters`` package
    __init__ (which imports comfy) is bypassed by registering a bare package for it, whose folder is the
    loaded pack's."""
    name = "zsvr.nodes.adapters"
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [str(pathlib.Path(ZSVR.__path__[0]) / "nodes" / "adapters")]
        sys.modules[name] = module
    from zsvr.nodes import switch_protocol
    from zsvr.nodes.adapters import cogvideox

    return cogvideox, switch_protocol


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny model and latent (CPU check)")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blocks", default="0-3,15-29")
    args = parser.parse_args(argv)
    from diffusers import CogVideoXTransformer3DModel

    sw, protocol = _import_switch()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    if device == "cpu" and not args.small:
        print("no GPU: use --small for a CPU check", file=sys.stderr)
        return 2
    if args.small:
        torch.set_num_threads(1)  # tiny tensors: more threads only contend (seen 90x slower on a shared 2-core box)
        dtype = torch.float32
        config = dict(num_attention_heads=2, attention_head_dim=16, num_layers=30, text_embed_dim=32,
                      sample_frames=9, sample_height=16, sample_width=16, time_embed_dim=32,
                      max_text_seq_length=16)
        latent, text = (3, 16, 16), (16, 32)
    else:
        config = {}  # diffusers' defaults are CogVideoX-2b
        latent, text = (13, 60, 90), (226, 4096)
    with torch.device(device):
        model = CogVideoXTransformer3DModel(**config).to(dtype).eval()
    for index, block in enumerate(model.transformer_blocks):
        block.attn1.set_processor(sw.SwitchProcessor(index, block.attn1.processor))
    frames, height, width = latent
    x2 = torch.randn(2, frames, 16, height, width, device=device, dtype=dtype)
    ctx2 = torch.randn(2, *text, device=device, dtype=dtype)
    t2 = torch.full((2,), 500, device=device, dtype=torch.long)
    blocks = []
    for part in args.blocks.split(","):
        lo, _, hi = part.partition("-")
        blocks.extend(range(int(lo), int(hi or lo) + 1))
    settings = protocol.SwitchSettings(blocks, sw.CogVideoXAdapter.family, lambda options: True)

    def forward(x, ctx, t, options):
        return model(hidden_states=x, encoder_hidden_states=ctx, timestep=t,
                     attention_kwargs={sw.OPTIONS_KWARG: options}, return_dict=False)[0]

    def cfg_step():
        forward(x2, ctx2, t2, {})

    def switched_step():
        base = {protocol.SWITCH_KEY: settings, protocol.CACHE_KEY: protocol.PassCache()}
        forward(x2[:1], ctx2[:1], t2[:1], dict(base, **{protocol.PASS_KEY: protocol.Pass.NULL}))
        forward(x2[1:], ctx2[1:], t2[1:], dict(base, **{protocol.PASS_KEY: protocol.Pass.REMOVE}))

    def timed(fn):
        with torch.inference_mode():
            fn()  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    cfg = timed(cfg_step)
    switched = timed(switched_step)
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "date": datetime.date.today().isoformat(),
        "command": "python bench/bench_switch_overhead.py" + (" --small" if args.small else ""),
        "latent_t_h_w": list(latent),
        "text_tokens": text[0],
        "switched_blocks": len(set(blocks)),
        "cfg_step_ms": round(cfg * 1000, 2),
        "switched_step_ms": round(switched * 1000, 2),
        "switch_overhead": round(switched / cfg, 4),
        "note": "random-initialised weights; transformer forwards only; median of repeats after one warm-up",
    }
    print(f"{'step':<28}{'ms':>10}")
    print(f"{'plain two-row CFG':<28}{result['cfg_step_ms']:>10.1f}")
    print(f"{'switched edit (null+remove)':<28}{result['switched_step_ms']:>10.1f}")
    print(f"switch_overhead = {result['switch_overhead']:.3f}x  ({result['device']}, {result['dtype']})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "switch_overhead_cpu_small.json" if args.small else f"switch_overhead_{device}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
