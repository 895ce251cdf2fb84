#!/usr/bin/env bash
# Builds the Rust twin of the `deploys` example into a component, as the
# template and the core projector are built: wasm32-unknown-unknown, then
# wit-component (projectors/tools/componentize). No WASI imports.
#
#   rust/build.sh [OUT]     default OUT: rust/target/deploys.wasm
#
# Prints progress and the SHA-256 on stderr, the component's path on stdout.
# The bytes depend only on the sources, Cargo.lock and rustc (pinned below):
# the checkout path and CARGO_HOME are remapped out of the binary.
set -euo pipefail

RUST_VERSION="1.95.0"
TARGET="wasm32-unknown-unknown"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
TOOLS="$(cd "$HERE/../../tools" && pwd -P)"
OUT="${1:-$HERE/target/deploys.wasm}"

say() { echo "rust/build.sh: $*" >&2; }

cd "$HERE"
have="$(rustc -V)"
case "$have" in
    "rustc $RUST_VERSION "*) ;;
    *) say "need rustc $RUST_VERSION for a reproducible build, found: $have"; exit 2 ;;
esac
if ! rustup target list --installed | grep -qx "$TARGET"; then
    say "installing the $TARGET target"
    rustup target add "$TARGET" >&2
fi

unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS \
      RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET \
      CARGO_INCREMENTAL CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
while IFS= read -r v; do unset "$v"; done < <(env | sed -n 's/^\(CARGO_PROFILE_[A-Z0-9_]*\)=.*/\1/p')
CARGO_HOME_DIR="$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)"
flags=(
    "-Clink-arg=-zstack-size=65536"
    "--remap-path-prefix=$HERE=/leviathan/projectors/examples/rust"
    "--remap-path-prefix=$CARGO_HOME_DIR=/cargo"
)
CARGO_ENCODED_RUSTFLAGS="$(IFS=$'\x1f'; echo "${flags[*]}")"
export CARGO_ENCODED_RUSTFLAGS

start=$SECONDS
# A host tool: its own flags do not reach the component's bytes.
env -u CARGO_ENCODED_RUSTFLAGS cargo build --quiet --locked --release \
    --manifest-path "$TOOLS/componentize/Cargo.toml" >&2
cargo build --quiet --locked --release --target "$TARGET" --manifest-path "$HERE/Cargo.toml" >&2
mkdir -p "$(dirname "$OUT")"
"$TOOLS/componentize/target/release/componentize" new \
    "$HERE/target/$TARGET/release/leviathan_deploys_projector.wasm" "$OUT.tmp" >&2
# Fails if the component imports any wasi: interface.
"$TOOLS/componentize/target/release/componentize" inspect "$OUT.tmp" >/dev/null
mv "$OUT.tmp" "$OUT"
say "$OUT: $(wc -c < "$OUT" | tr -d ' ') bytes, sha256 $(sha256sum "$OUT" | cut -d' ' -f1) ($((SECONDS - start)) s)"
echo "$OUT"
