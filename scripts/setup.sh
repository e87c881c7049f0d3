#!/usr/bin/env bash
# Create .venv in the checkout and install everything the project needs (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# torch first: on x86_64 the pinned release is served locally where the workplace provides it.
.venv/bin/python -m pip install -q -r requirements.txt
