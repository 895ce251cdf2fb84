//! Leviathan core projector.
//!
//! The rules live in [`rules`] as plain Rust (tested natively with `cargo
//! test`); on wasm32 a thin wit-bindgen layer ([`glue`]) exports them through
//! the `leviathan:projector@1.0.0` contract, and [`bump`] is the allocator.

pub mod json;
pub mod rules;

#[cfg(target_arch = "wasm32")]
mod bump;
#[cfg(target_arch = "wasm32")]
mod glue;

#[cfg(test)]
mod tests;
