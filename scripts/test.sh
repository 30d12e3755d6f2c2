#!/usr/bin/env bash
# Set up and run the whole test suite (unit, integration, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
HUBFERRY_EXTRAS=dev,train scripts/setup.sh
scripts/services.sh
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
