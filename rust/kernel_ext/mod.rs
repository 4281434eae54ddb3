// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions that untorn's modules need and the `kernel` crate does not have yet.
//!
//! This is the one place for `unsafe` code. Out-of-tree modules cannot link to a crate of their
//! own, so each module compiles this directory into itself:
//!
//! ```ignore
//! #[path = "../../rust/kernel_ext/mod.rs"]
//! pub mod kernel_ext;
//! ```

pub mod atomic_limits;
pub mod bindings;
pub mod bio;
pub mod bounce;
pub mod cred;
pub mod folio;
pub mod fs;
pub mod lower;
pub mod ops;
pub mod publication;
pub mod task;
pub mod vfs;
