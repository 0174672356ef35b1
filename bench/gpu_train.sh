#!/usr/bin/env bash
# Training throughput on a GPU host (issue #24 item 1): bench/trainbench.py for head, partial and
# full with the app's pipeline and the plain torchvision loop, then (when scipy and scikit-learn
# are there) the whole recipe, training.ml.train.fit.fit, on the same folder.
#
#   bench/gpu_train.sh DATA_DIR
#
# DATA_DIR holds kermany-pediatric/ (an ImageFolder), mobilenet_v2-imagenet-features.pth and,
# where the machine lacks them, wheels/ with pydicom and isal (training.ml.imaging decodes the
# images with them); nothing else beyond torch, torchvision, numpy and Pillow is needed. Prints
# the JSON report and writes it to $OUT/trainbench.json when OUT is set. Settings by environment:
# GPU_TRAIN_ARCH (mobilenet_v2), GPU_TRAIN_LIMIT (2500 images), GPU_TRAIN_EPOCHS (3: the first
# decodes, the later ones are the steady state), GPU_TRAIN_BATCH (256), PYTHON (python3).
set -euo pipefail

DATA=$(cd "${1:?usage: bench/gpu_train.sh DATA_DIR}" && pwd)
ARCH=${GPU_TRAIN_ARCH:-mobilenet_v2}
LIMIT=${GPU_TRAIN_LIMIT:-2500}
EPOCHS=${GPU_TRAIN_EPOCHS:-3}
BATCH=${GPU_TRAIN_BATCH:-256}
PY=${PYTHON:-python3}
IMAGES=${GPU_TRAIN_IMAGES:-$DATA/kermany-pediatric}
WEIGHTS=${GPU_TRAIN_WEIGHTS:-$DATA/$ARCH-imagenet-features.pth}
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! "$PY" -c "import pydicom, isal" 2>/dev/null; then
    # Unpacked into a folder of this run only (no pip needed; the machine is left as it is):
    # the pure-Python wheels and those built for this Python.
    "$PY" - "$DATA/wheels" "$work/site" <<'EOF'
import pathlib, sys, zipfile
tag = f"-cp{sys.version_info.major}{sys.version_info.minor}-"
wheels = [w for w in sorted(pathlib.Path(sys.argv[1]).glob("*.whl"))
          if "-py3-none-any" in w.name or tag in w.name]
for wheel in wheels:
    zipfile.ZipFile(wheel).extractall(sys.argv[2])
print("unpacked:", ", ".join(w.name for w in wheels) or "nothing", file=sys.stderr)
EOF
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import pydicom, isal" || {
        echo "pydicom and isal are needed: put their wheels for this Python in $DATA/wheels" >&2
        exit 2
    }
fi
fit=()
if "$PY" -c "import scipy, sklearn" 2>/dev/null; then
    fit=(--fit)
else
    echo "scipy/scikit-learn missing: the fit() timing is skipped" >&2
fi

echo "settings: arch=$ARCH images=$IMAGES limit=$LIMIT epochs=$EPOCHS batch=$BATCH" \
    "weights=$WEIGHTS $("$PY" -c 'import sys, torch; print("python", sys.version.split()[0],
    "torch", torch.__version__, "cuda", torch.cuda.is_available())')" >&2
"$PY" -m bench.ml training --images "$IMAGES" --arch "$ARCH" --limit "$LIMIT" \
    --epochs "$EPOCHS" --batch-size "$BATCH" --backbone-weights "$WEIGHTS" \
    --out "$work/trainbench.json" ${fit[@]+"${fit[@]}"}
cat "$work/trainbench.json"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$work/trainbench.json" "$OUT/trainbench.json"
fi
