#!/usr/bin/env bash
# The main job on the embedded default, offline: start the built-in Hub registry, train the example
# LoRA locally with live progress, publish it automatically, verify it, and download it back.
set -euo pipefail
cd "$(dirname "$0")/.."
HUBFERRY_EXTRAS=dev,train scripts/setup.sh
demo="$PWD/.hubferry-demo"
rm -rf "$demo" && mkdir -p "$demo"
port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
endpoint="http://127.0.0.1:$port"

echo "==> starting the built-in Hub registry on $endpoint (data in $demo/hub)" >&2
.venv/bin/hubferry hub serve --data "$demo/hub" --port "$port" >"$demo/hub.log" 2>&1 &
hub_pid=$!
trap 'kill $hub_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "$endpoint/health" >/dev/null 2>&1 && break
  kill -0 $hub_pid 2>/dev/null || { cat "$demo/hub.log" >&2; exit 1; }
  sleep 0.1
done
token=$(.venv/bin/hubferry hub token create demo --data "$demo/hub")

export HUBFERRY_HOME="$demo/home" HF_ENDPOINT="$endpoint" HF_TOKEN="$token" HF_HOME="$demo/hf-home"
echo "==> training examples/tiny_lora locally; it publishes itself when training succeeds" >&2
.venv/bin/hubferry train --local --name tiny-lora --total-steps 100 --output "$demo/out" --wait -- \
  .venv/bin/python examples/tiny_lora/train.py --output "$demo/out" --steps 100

echo "==> downloading the published model back from the registry" >&2
.venv/bin/python - <<PY
from huggingface_hub import snapshot_download
import os
path = snapshot_download("demo/tiny-lora", endpoint="$endpoint", token=os.environ["HF_TOKEN"])
print("downloaded to", path)
for name in sorted(os.listdir(path)):
    print("  ", name, os.path.getsize(os.path.join(path, name)), "bytes")
PY
cat >&2 <<EOF
==> done. To browse the result, start the registry again on the same data and port:
      .venv/bin/hubferry hub serve --data $demo/hub --port $port
    then open $endpoint/demo/tiny-lora and sign in with this token:
      $token
    Jobs: HUBFERRY_HOME=$demo/home .venv/bin/hubferry jobs list
EOF
