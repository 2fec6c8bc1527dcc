#!/usr/bin/env bash
# Stage what the GPU machine needs for bench/bench_zsvd_end_to_end.py into the git-ignored folder .device/:
#   .device/ComfyUI.tar.gz  ComfyUI's source, packed (no .git, models, tests, input/output files; the frontend is a pip package
#                           and is not needed); the device command unpacks it to /tmp/ComfyUI
#   .device/wheels    the wheels the device image lacks (Python 3.12, manylinux x86-64 or pure Python)
# Run from anywhere:  bash bench/device/prepare.sh [COMFYUI_DIR]   (default: $COMFYUI_PATH, else /work/ComfyUI)
# Needs pip access to PyPI (the ordinary client). Prints the size that travels with the working tree (limit 64 MiB).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
COMFY="${1:-${COMFYUI_PATH:-/work/ComfyUI}}"
PY="${PYTHON:-python3}"
[ -f "$COMFY/nodes.py" ] || { echo "prepare.sh: no ComfyUI at $COMFY (pass its folder or set COMFYUI_PATH)" >&2; exit 2; }

# the minimal set, found by running the bench here under bench/device/import_blocker.py (see README.md)
# (diffusers' other needs, huggingface-hub>=1.32 among them, are on the device: it has huggingface_hub 1.33.0)
WHEELS=(
  diffusers==0.42.1   # CogVideoX transformer/VAE: ZSVR_LoadCogVideoX and the official-schedule side
  torchsde==0.2.6     # comfy/k_diffusion/sampling.py imports it when ComfyUI boots
  trampoline==0.1.2   # torchsde's one dependency the device lacks
  av==18.1.0          # comfy_api/latest/_input/video_types.py imports it when ComfyUI boots (abi3 wheel, 34 MiB)
  kornia==0.9.0       # the pack's kernels import it when the pack loads (color conversion, filters, warping)
  kornia_rs==0.2.0    # kornia's one dependency the device lacks
)

mkdir -p "$REPO/.device"
EXCLUDE="$REPO/.git/info/exclude"
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.device/' "$EXCLUDE" 2>/dev/null || echo '/.device/' >> "$EXCLUDE"

rm -rf "$REPO/.device/ComfyUI" "$REPO/.device/ComfyUI.tar.gz"
STAGE="$(mktemp -d)"; trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/ComfyUI"
tar -C "$COMFY" -cf - \
    --exclude=./.git --exclude=./models --exclude=./tests --exclude=./tests-unit \
    --exclude=./input --exclude=./output --exclude=./temp --exclude=./user --exclude=./custom_nodes \
    --exclude=__pycache__ --exclude='*.pyc' . | tar -C "$STAGE/ComfyUI" -xf -
mkdir -p "$STAGE/ComfyUI/custom_nodes" "$STAGE/ComfyUI/input" "$STAGE/ComfyUI/output"
# packed: the unpacked copy (16 MiB) beside the av wheel (34 MiB) and the working tree no longer fits in 64 MiB
tar -C "$STAGE" -czf "$REPO/.device/ComfyUI.tar.gz" ComfyUI

mkdir -p "$REPO/.device/wheels"
rm -f "$REPO/.device/wheels"/*.whl
for spec in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$REPO/.device/wheels" "$spec"
done

echo "wheels:"; ls -1 "$REPO/.device/wheels"
tracked=$(cd "$REPO" && git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
untracked=$(cd "$REPO" && git ls-files -z --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb "$REPO/.device" | cut -f1)
total=$(( ${tracked:-0} + ${untracked:-0} + carried ))
printf '.device: %s MiB; working tree (tracked + untracked, not ignored): %s MiB; total that travels: %s MiB (limit 64)\n' \
    "$(( carried / 1048576 ))" "$(( (${tracked:-0} + ${untracked:-0}) / 1048576 ))" "$(awk -v t=$total 'BEGIN{printf "%.1f", t/1048576}')"
[ "$total" -lt $(( 64 * 1048576 )) ] || { echo "prepare.sh: over the 64 MiB limit" >&2; exit 1; }
