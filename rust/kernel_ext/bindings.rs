// SPDX-License-Identifier: GPL-2.0

//! Raw bindings for what `kernel::bindings` lacks.
//!
//! Generated into `rust/bindings/bindings_generated.rs` by `tools/testing/gen-bindings` from
//! `rust/bindings/bindings_helper.h`: `untorn_helper_*` C wrappers of `static inline` functions
//! (implemented in `rust/helpers/`) and `UNTORN_*` constants for macros that bindgen cannot
//! evaluate. Every type they mention is the one from `kernel::bindings`.

#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    missing_docs,
    unreachable_pub,
    improper_ctypes,
    clippy::all
)]

#[allow(unused_imports)]
use kernel::bindings::*;

include!("../bindings/bindings_generated.rs");

/// The publication slots of `rust/helpers/helpers.c`, opaque to Rust.
#[repr(C)]
pub struct untorn_publication {
    _opaque: [u8; 0],
}
