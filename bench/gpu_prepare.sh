#!/usr/bin/env bash
# Prepares bench/gpu-kit/ here (with access to PyPI) for bench/gpu.sh on a GPU machine that has
# Python, torch and torchvision but no internet and no system services (issue #24 item 4).
#
#   bench/gpu_prepare.sh DATA_DIR [PYTHON_VERSION]      (default 3.12, the GPU machine's)
#
# DATA_DIR: an ImageFolder of chest X-rays (e.g. ../shared/data/kermany-pediatric);
# GPU_KIT_IMAGES images (600) are copied, half per class at most. The kit holds:
#   wheels/    every package the app and the benchmark need, for that Python on manylinux x86_64,
#              except torch and torchvision (the machine's own) and the large scientific ones
#              listed in wheels/ON-DEVICE.txt, which such machines have (gpu.sh checks them and
#              installs any that is missing from wheels/extra/ when GPU_KIT_FULL=1 put them
#              there); grad-cam (an sdist) built into a wheel; pgserver (PostgreSQL binaries)
#   data/      the images, by class
#   backbone.pth  the ImageNet backbone when GPU_KIT_WEIGHTS points at one (CAMs then mean
#              something; speed is the same without)
# It must stay under the device tool's 64 MiB: the script prints its size.
set -euo pipefail
DATA=$(cd "${1:?usage: bench/gpu_prepare.sh DATA_DIR [PYTHON_VERSION]}" && pwd)
PYVER=${2:-3.12}
cd "$(dirname "$0")/.."
KIT=bench/gpu-kit
PY=.venv/bin/python
N=${GPU_KIT_IMAGES:-600}
rm -rf "$KIT" && mkdir -p "$KIT/wheels/extra" "$KIT/data"

# What the machine is expected to have (big wheels, present in any ML image).
ON_DEVICE="numpy scipy scikit-learn matplotlib opencv-python-headless pillow fonttools contourpy kiwisolver"
printf '%s\n' $ON_DEVICE > "$KIT/wheels/ON-DEVICE.txt"

# The exact versions this checkout runs with: the requirements and what they need, as installed.
"$PY" bench/gpu_closure.py requirements.txt requirements-nodeps.txt --also httpx \
  > "$KIT/requirements.txt"
echo "pgserver" >> "$KIT/requirements.txt"  # only its PostgreSQL binaries are used
platform=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
fetch() {  # fetch DEST REQ: the wheel for the target, else the newest one that has a wheel
  local dest=$1 req=$2 name=${2%%==*}
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${platform[@]}" -d "$dest" "$req" 2>/dev/null && return 0
  echo "gpu_prepare: no $PYVER wheel of $req; taking the newest $name that has one" >&2
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${platform[@]}" -d "$dest" "$name"
}
while read -r req; do
  [ -n "$req" ] || continue
  name=$(echo "${req%%==*}" | tr 'A-Z_' 'a-z-')
  if [ "$name" = grad-cam ]; then
    continue  # an sdist: built below
  elif echo " $ON_DEVICE " | grep -q " $name "; then
    [ "${GPU_KIT_FULL:-0}" = 1 ] && fetch "$KIT/wheels/extra" "$req"
  else
    fetch "$KIT/wheels" "$req"
  fi
done < "$KIT/requirements.txt"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$KIT/wheels" \
  "$(grep -i '^grad-cam==' requirements-nodeps.txt)" 2>/dev/null ||
  "$PY" -m pip wheel -q --no-deps -w "$KIT/wheels" "$(grep -i '^grad-cam==' requirements-nodeps.txt)"

# Images: up to N, split evenly over the classes, names kept (patient grouping reads them).
classes=$(find "$DATA" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
per=$(( N / $(echo "$classes" | wc -l) ))
for c in $classes; do
  mkdir -p "$KIT/data/$c"
  # awk reads to the end: `head` would leave sort on a closed pipe (SIGPIPE, and with pipefail
  # the script stopped here whenever a class had more files than it takes).
  find "$DATA/$c" -maxdepth 1 -type f | sort | awk -v n="$per" 'NR <= n' |
    xargs -I{} cp {} "$KIT/data/$c/"
done
if [ -n "${GPU_KIT_WEIGHTS:-}" ]; then cp "$GPU_KIT_WEIGHTS" "$KIT/backbone.pth"; fi
echo "gpu_prepare: $(du -sh "$KIT" | cut -f1) in $KIT ($(ls "$KIT/wheels"/*.whl | wc -l) wheels," \
  "$(find "$KIT/data" -type f | wc -l) images) for Python $PYVER"
bytes=$(du -sb "$KIT" | cut -f1)
if [ "$bytes" -gt $((64 * 1024 * 1024)) ]; then
  echo "gpu_prepare: WARNING: $((bytes / 1024 / 1024)) MiB is over the device tool's 64 MiB:" \
    "leave GPU_KIT_WEIGHTS out (speeds are the same without it) or lower GPU_KIT_IMAGES" >&2
fi
