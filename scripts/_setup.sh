# Shared by scripts/test, scripts/demo and scripts/bench: install what this machine lacks, then
# make .venv with drtool and its test tools. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

have_pg_server() {
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

missing=()
have_pg_server || missing+=(postgresql)
command -v age >/dev/null 2>&1 || missing+=(age)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)  # SSH signature interop tests
for extra in ${DRTOOL_EXTRA_APT:-}; do   # e.g. chromium for the report rendering test
  command -v "$extra" >/dev/null 2>&1 || missing+=("$extra")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian packages" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.drtool-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing drtool and test dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# Byte-compile drtool's own modules: .venv holds it as an editable install, and where
# PYTHONDONTWRITEBYTECODE is set nothing else writes these, so every command would compile all
# of drtool again at start (measured ~50 ms of each command's start-up).
.venv/bin/python -m compileall -q drtool >/dev/null
