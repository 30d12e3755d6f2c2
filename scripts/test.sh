#!/usr/bin/env bash
# Set up and run the whole test suite (unit, integration, e2e; browser tests when present).
set -euo pipefail
cd "$(dirname "$0")/.."
HUBFERRY_EXTRAS=dev,train scripts/setup.sh
scripts/services.sh
if compgen -G "tests/browser/test_*.py" >/dev/null && ! command -v chromium >/dev/null; then
  echo "installing Debian's chromium for the browser tests" >&2
  (apt-get update -qq && apt-get install -y -qq chromium) >&2
fi
echo "==> ruff and mypy over src/" >&2
.venv/bin/ruff check src
.venv/bin/mypy
# Two workers, a test file each at a time (a file's tests share fixtures such as a served registry): most
# tests wait on subprocesses and servers, so this halves the wall time (17 min -> 8 on 2 cores).
exec .venv/bin/python -m pytest -p no:cacheprovider -n "${HUBFERRY_TEST_WORKERS:-2}" --dist loadfile "$@"
