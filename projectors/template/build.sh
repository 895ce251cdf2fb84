#!/usr/bin/env bash
# Builds the template projector into a component: target/topology.wasm.
# Prints its SHA-256 and the LEVIATHAN_PROJECTORS entry that pins it.
set -euo pipefail
# Its outputs are read from ./target and ../tools/componentize/target: a target
# directory set for another build must not move them.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
TOOLS="$HERE/../tools"
TARGET="wasm32-unknown-unknown"

rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
cargo build --quiet --locked --release --manifest-path "$TOOLS/componentize/Cargo.toml" >&2
# A 64 KiB stack instead of Rust's 1 MiB: the server resets all of an
# instance's memory after every event (`leviathan projector new`'s build.sh
# says more; STACK_SIZE changes it).
RUSTFLAGS="--remap-path-prefix=$HERE=/projector -Clink-arg=-zstack-size=${STACK_SIZE:-65536}" \
    cargo build --quiet --locked --release --target "$TARGET" --manifest-path "$HERE/Cargo.toml" >&2
OUT="$HERE/target/topology.wasm"
"$TOOLS/componentize/target/release/componentize" new \
    "$HERE/target/$TARGET/release/leviathan_topology_projector.wasm" "$OUT" >&2
digest="$(sha256sum "$OUT" | cut -d' ' -f1)"
echo "built $OUT ($(wc -c < "$OUT") bytes)" >&2
echo "LEVIATHAN_PROJECTORS=core,$OUT#sha256=$digest" >&2
echo "$OUT"
