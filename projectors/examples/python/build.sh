#!/usr/bin/env bash
# Builds the Python `deploys` example (app.py) into a component with
# componentize-py, installed from PyPI into a virtualenv at the version and
# wheel hashes pinned in requirements.txt.
#
#   python/build.sh [OUT]   default OUT: python/target/deploys.wasm
#
# LEVIATHAN_TOOLCHAIN_DIR (default python/target/toolchain) holds the venv; it
# is reused while requirements.txt is unchanged. Needs python3 (3.9 or later,
# with the venv module) and, for the first install, access to PyPI.
# Prints progress and the SHA-256 on stderr, the component's path on stdout.
# LEVIATHAN_WIT_DIR: the projector contract (default: this repository's wit/).
# Exit status 3: the contract is not found, or the toolchain could not be installed (no python3 or venv, no
# access to PyPI); any other failure is the build's.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# The projector contract: Leviathan's wit/ (LEVIATHAN_WIT_DIR for a copy of
# this example outside Leviathan's repository).
WIT_DIR="${LEVIATHAN_WIT_DIR:-$HERE/../../../wit}"
if [[ ! -f "$WIT_DIR/projector.wit" ]]; then
    echo "$(basename "$HERE")/build.sh: no projector contract at $WIT_DIR (wit/projector.wit): set" \
        "LEVIATHAN_WIT_DIR to the wit/ directory of Leviathan's repository (or a copy of it)" >&2
    exit 3
fi
WIT="$(cd "$WIT_DIR" && pwd -P)"
# Both paths may be relative (as CI passes them); they are made absolute
# here, since the build runs its tools from other directories.
abspath() { mkdir -p "$1" && (cd "$1" && pwd -P); }
OUT="${1:-$HERE/target/deploys.wasm}"
OUT="$(abspath "$(dirname "$OUT")")/$(basename "$OUT")"
TOOLCHAIN="$(abspath "${LEVIATHAN_TOOLCHAIN_DIR:-$HERE/target/toolchain}")/python"
VENV="$TOOLCHAIN/venv"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

say() { echo "python/build.sh: $*" >&2; }

command -v "$PYTHON" >/dev/null || { say "$PYTHON not found"; exit 3; }

want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/componentize-py" || "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
    say "installing componentize-py into $VENV"
    rm -rf "$VENV"
    mkdir -p "$TOOLCHAIN"
    if ! "$PYTHON" -m venv "$VENV" >&2; then
        say "cannot create a virtualenv with $PYTHON"
        exit 3
    fi
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --only-binary=:all: -r "$HERE/requirements.txt" >&2; then
        say "cannot install componentize-py from PyPI (no network access?)"
        rm -rf "$VENV"
        exit 3
    fi
    echo "$want" > "$STAMP"
fi

start=$SECONDS
# A staging directory with nothing but the app: componentize-py searches its
# python path (and writes bytecode caches there while it pre-initializes).
STAGE="$TOOLCHAIN/stage"
rm -rf "$STAGE"
mkdir -p "$STAGE" "$(dirname "$OUT")"
cp "$HERE/app.py" "$STAGE/"
# VIRTUAL_ENV points componentize-py at the venv's site-packages (only its
# own package), not at whatever the host interpreter has installed.
(cd "$STAGE" && VIRTUAL_ENV="$VENV" "$VENV/bin/componentize-py" --quiet \
    -d "$WIT" -w projector componentize app -p "$STAGE" -o "$OUT.tmp") >&2
mv "$OUT.tmp" "$OUT"
say "$OUT: $(wc -c < "$OUT" | tr -d ' ') bytes, sha256 $(sha256sum "$OUT" | cut -d' ' -f1) ($((SECONDS - start)) s)"
echo "$OUT"
