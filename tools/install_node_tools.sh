#!/usr/bin/env bash
# Install the Node tools the tests use (Khronos glTF validator) into tools/node_modules.
# Needs node >= 18 and npm; without them it says so and exits 0 (the tests then skip).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "install_node_tools: node/npm not found; glTF validator tests will be skipped" >&2
  exit 0
fi
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
node -e "require('gltf-validator'); console.log('gltf-validator', require('gltf-validator/package.json').version)"
