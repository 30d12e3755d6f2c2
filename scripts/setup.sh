#!/usr/bin/env bash
# Create or refresh .venv with hubferry and its extras; fast no-op when pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${HUBFERRY_EXTRAS:-dev}"
stamp=".venv/.hubferry-setup-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/_}"
if [ -f "$stamp" ]; then exit 0; fi
python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >&2
if [[ ",$extras," == *",train,"* ]] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # Only this exact version is the CPU build; any other spec pulls a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0" >&2
fi
.venv/bin/python -m pip install -q -e ".[${extras}]" >&2
rm -f .venv/.hubferry-setup-*
touch "$stamp"
