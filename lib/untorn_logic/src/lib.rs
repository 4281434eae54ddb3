// SPDX-License-Identifier: GPL-2.0

//! Pure logic shared by the untorn kernel modules and the host tool.
//!
//! Everything here is `no_std`, allocation-free and free of `crate::` paths, so that the kernel
//! modules can compile each file as a module of their own crate with `#[path = ...]`, and the
//! host can test the very same code with `cargo test` and proptest.

#![no_std]

pub mod atomic_write;
pub mod crash_model;
pub mod errno;
pub mod mount_options;
pub mod range;
pub mod rng;
pub mod tornblk;
pub mod uapi;
pub mod unit;
