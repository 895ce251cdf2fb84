#!/usr/bin/env bash
# Rebuild the core projector component reproducibly.
#
#   projectors/build.sh          build, write projectors/dist/core.wasm and its .sha256
#   projectors/build.sh --check  clean rebuild into a temp dir; exit 1 (printing both
#                                digests) unless it matches projectors/dist/core.wasm.sha256
#
# The bytes depend only on the sources, the Cargo.lock files and the Rust
# toolchain (pinned below): the checkout path and CARGO_HOME are remapped out
# of the binary, and any RUSTFLAGS from the environment are ignored.
set -euo pipefail

RUST_VERSION="1.95.0"
TARGET="wasm32-unknown-unknown"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
DIST="$HERE/dist"
PIN="$DIST/core.wasm.sha256"

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

say() { echo "build.sh: $*" >&2; }

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# --- toolchain -------------------------------------------------------------
# Run from inside the tree so a rustup override / rust-toolchain file applies.
cd "$HERE"
have="$(rustc -V)"
case "$have" in
    "rustc $RUST_VERSION "*) ;;
    *) say "need rustc $RUST_VERSION for a reproducible build, found: $have"; exit 2 ;;
esac
if ! rustup target list --installed | grep -qx "$TARGET"; then
    say "installing the $TARGET target"
    rustup target add "$TARGET"
fi

# --- a clean, path-independent environment ---------------------------------
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS \
      RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET \
      CARGO_INCREMENTAL CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
while IFS= read -r v; do unset "$v"; done < <(env | sed -n 's/^\(CARGO_PROFILE_[A-Z0-9_]*\)=.*/\1/p')
CARGO_HOME_DIR="$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)"
flags=(
    "-Clink-arg=-zstack-size=16384"
    "--remap-path-prefix=$HERE=/leviathan/projectors"
    "--remap-path-prefix=$CARGO_HOME_DIR=/cargo"
)
CARGO_ENCODED_RUSTFLAGS="$(IFS=$'\x1f'; echo "${flags[*]}")"
export CARGO_ENCODED_RUSTFLAGS

if [[ $check == 1 ]]; then
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/core-projector-check.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    GUEST_TARGET_DIR="$WORK/target"
    OUT="$WORK/core.wasm"
else
    GUEST_TARGET_DIR="$HERE/core/target"
    OUT="$DIST/core.wasm"
fi

# --- build -----------------------------------------------------------------
start=$SECONDS
say "building the componentize tool"
# A host tool: its own flags do not reach the component's bytes.
env -u CARGO_ENCODED_RUSTFLAGS cargo build --quiet --locked --release \
    --manifest-path "$HERE/tools/componentize/Cargo.toml"
COMPONENTIZE="$HERE/tools/componentize/target/release/componentize"

say "building the guest for $TARGET"
cargo build --quiet --locked --release --target "$TARGET" \
    --manifest-path "$HERE/core/Cargo.toml" --target-dir "$GUEST_TARGET_DIR"
MODULE="$GUEST_TARGET_DIR/$TARGET/release/leviathan_core_projector.wasm"

say "componentizing"
mkdir -p "$(dirname "$OUT")"
"$COMPONENTIZE" new "$MODULE" "$OUT.tmp"
# Fails if the component imports any wasi: interface.
"$COMPONENTIZE" inspect "$OUT.tmp" >&2
mv "$OUT.tmp" "$OUT"

digest="$(sha256 "$OUT")"
size="$(wc -c < "$OUT" | tr -d ' ')"
say "core.wasm: $size bytes, sha256 $digest ($((SECONDS - start)) s)"

if [[ $check == 1 ]]; then
    pinned="$(tr -d ' \n' < "$PIN" 2>/dev/null || true)"
    echo "pinned:  ${pinned:-<none>}"
    echo "rebuilt: $digest"
    if [[ "$digest" != "$pinned" ]]; then
        say "MISMATCH: the rebuilt component differs from the pinned $PIN"
        exit 1
    fi
    say "OK: the rebuilt component matches the pin"
else
    echo "$digest" > "$PIN"
    say "pinned $PIN"
fi
