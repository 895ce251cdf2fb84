#!/usr/bin/env bash
# Builds the JavaScript `deploys` example (projector.js) into a component with
# ComponentizeJS, installed from npm at the versions pinned in package.json and
# package-lock.json (`npm ci`), through its library API (componentize.mjs).
#
#   js/build.sh [OUT]       default OUT: js/target/deploys.wasm
#
# LEVIATHAN_TOOLCHAIN_DIR (default js/target/toolchain) holds node_modules; it
# is reused while package-lock.json is unchanged. Needs Node.js 18 or later and
# npm and, for the first install, access to the npm registry.
# Prints progress and the SHA-256 on stderr, the component's path on stdout.
# LEVIATHAN_WIT_DIR: the projector contract (default: this repository's wit/).
# Exit status 3: the contract is not found, or the toolchain could not be installed (no node or npm, too old
# a node, no access to the npm registry); any other failure is the build's.
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
TOOLCHAIN="$(abspath "${LEVIATHAN_TOOLCHAIN_DIR:-$HERE/target/toolchain}")/js"
STAMP="$TOOLCHAIN/.lock.sha256"

say() { echo "js/build.sh: $*" >&2; }

command -v node >/dev/null && command -v npm >/dev/null || { say "node and npm are needed"; exit 3; }
major="$(node -p 'process.versions.node.split(".")[0]')"
if (( major < 18 )); then
    say "need Node.js 18 or later, found $(node --version)"
    exit 3
fi

want="$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ ! -d "$TOOLCHAIN/node_modules/@bytecodealliance/componentize-js" || "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
    say "installing ComponentizeJS into $TOOLCHAIN"
    rm -rf "$TOOLCHAIN"
    mkdir -p "$TOOLCHAIN"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$TOOLCHAIN/"
    # No install scripts: every binary it needs comes as a pinned npm package.
    if ! (cd "$TOOLCHAIN" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2; then
        say "cannot install ComponentizeJS from npm (no network access?)"
        rm -rf "$TOOLCHAIN"
        exit 3
    fi
    echo "$want" > "$STAMP"
fi

start=$SECONDS
mkdir -p "$(dirname "$OUT")"
# Run from the toolchain directory so that the import resolves to its node_modules.
cp "$HERE/componentize.mjs" "$TOOLCHAIN/componentize.mjs"
node "$TOOLCHAIN/componentize.mjs" "$HERE/projector.js" "$WIT" "$OUT.tmp" >&2
mv "$OUT.tmp" "$OUT"
say "$OUT: $(wc -c < "$OUT" | tr -d ' ') bytes, sha256 $(sha256sum "$OUT" | cut -d' ' -f1) ($((SECONDS - start)) s)"
echo "$OUT"
