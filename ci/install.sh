#!/usr/bin/env bash
# Installs everything the tests need, idempotently:
#   - cargo-nextest (if `cargo nextest` is missing)
#   - a Python virtualenv at .venv with the pinned tools of ci/requirements.txt (MCUboot's imgtool)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "install.sh: installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "install.sh: creating .venv"
    "$python" -m venv .venv
fi
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -r ci/requirements.txt; then
    echo "install.sh: pip install failed" >&2
    exit 1
fi
.venv/bin/imgtool version >/dev/null
echo "install.sh: ok (imgtool $(.venv/bin/imgtool version), $(cargo nextest --version | head -1))"
