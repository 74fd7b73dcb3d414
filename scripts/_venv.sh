# Sourced by scripts/run and scripts/test: create .venv if needed and install the project.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.installed-$(cat pyproject.toml scripts/_venv.sh tests/plugins/example_plugin/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e ".[test]"
  if [ -f tests/plugins/example_plugin/pyproject.toml ]; then
    python -m pip install --quiet -e tests/plugins/example_plugin
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi
