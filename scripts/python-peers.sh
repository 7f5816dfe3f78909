#!/usr/bin/env bash
# Create <repo>/.venv with the real Python peers used by the interop tests
# (reasonchip 0.0.6, hat-juggler 0.7.6, cs.packetstream 20240630).
# Idempotent: does nothing if the venv already imports all three.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
VENV="${REPO_ROOT}/.venv"
REQS="${REPO_ROOT}/tests/interop/requirements.txt"
PYTHON="${PYTHON:-python3}"
CHECK='import reasonchip.net, hat.juggler, cs.packetstream'

die() { echo "python-peers: ERROR: $*" >&2; exit 1; }
say() { echo "python-peers: $*"; }

[[ -f "${REQS}" ]] || die "requirements file not found: ${REQS}"

if [[ -x "${VENV}/bin/python" ]] && "${VENV}/bin/python" -c "${CHECK}" >/dev/null 2>&1; then
    say "${VENV} already has the Python peers; nothing to do"
    exit 0
fi

command -v "${PYTHON}" >/dev/null 2>&1 || die "'${PYTHON}' not found (set PYTHON=... to override)"

if [[ ! -x "${VENV}/bin/python" ]]; then
    say "creating venv ${VENV} with $("${PYTHON}" --version 2>&1)"
    "${PYTHON}" -m venv "${VENV}" || die "'${PYTHON} -m venv ${VENV}' failed (on Debian: apt-get install python3-venv)"
else
    say "reusing existing venv ${VENV}"
fi

say "installing pinned packages from ${REQS}"
"${VENV}/bin/python" -m pip install --disable-pip-version-check --no-deps --ignore-requires-python -r "${REQS}" \
    || die "pip install failed (is PyPI reachable?)"

say "checking: ${CHECK}"
"${VENV}/bin/python" -c "${CHECK}" || die "installed venv cannot '${CHECK}'"
say "done: ${VENV}"
