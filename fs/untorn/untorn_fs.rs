// SPDX-License-Identifier: GPL-2.0

//! untorn: untorn buffered writes by writethrough.
//!
//! A buffered write to a file in writethrough mode is copied into the page cache and sent to the
//! device at once as one `REQ_ATOMIC` write; see `Documentation/filesystems/untorn.rst`.
//!
//! This is the module's foundation: the build of Rust, our own bindings and C helpers, and the
//! shared `no_std` logic, with KUnit tests that run in the kernel at load time.

use kernel::prelude::*;

#[path = "../../rust/kernel_ext/mod.rs"]
pub mod kernel_ext;

/// The pure logic shared with the host tool (`lib/untorn_logic`): its crate root, compiled as a
/// module of this crate (its `#![no_std]` is then redundant, not wrong).
#[allow(unused_attributes)]
#[path = "../../lib/untorn_logic/src/lib.rs"]
pub mod untorn_logic;

module! {
    type: UntornModule,
    name: "untorn",
    authors: ["untorn developers"],
    description: "untorn buffered writes by writethrough",
    license: "GPL",
}

struct UntornModule;

impl kernel::Module for UntornModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(UntornModule)
    }
}

#[kunit_tests(untorn_foundation)]
mod tests {
    use super::kernel_ext::{bindings as ext, fs::generic_atomic_write_valid};
    use super::untorn_logic::{
        atomic_write::{check_shape, AtomicWriteError},
        mount_options::FileMode,
        uapi, //
    };
    use kernel::bindings;

    /// Our bindgen run evaluated `REQ_ATOMIC` to the bit the kernel's enum names.
    #[test]
    fn req_atomic_matches_the_kernel() {
        assert_eq!(
            ext::UNTORN_REQ_ATOMIC,
            1 << bindings::req_flag_bits___REQ_ATOMIC
        );
    }

    /// The Rust copy of the uapi (`lib/untorn_logic/src/uapi.rs`) has the numbers and the
    /// layout of the C header `include/uapi/linux/untorn.h`.
    #[test]
    fn uapi_matches_the_c_header() {
        assert_eq!(ext::UNTORN_HDR_IOC_GET_MODE, uapi::UNTORN_IOC_GET_MODE);
        assert_eq!(ext::UNTORN_HDR_IOC_SET_MODE, uapi::UNTORN_IOC_SET_MODE);
        assert_eq!(
            ext::UNTORN_HDR_MODE_SIZE,
            core::mem::size_of::<uapi::UntornMode>()
        );
        assert_eq!(ext::UNTORN_MODE_OFF, FileMode::OFF);
        assert_eq!(ext::UNTORN_MODE_WRITETHROUGH, FileMode::WRITETHROUGH);
    }

    /// The shared shape rules give the kernel's verdict, with its errno, for direct writes,
    /// and buffered atomic writes are what the kernel refuses.
    #[test]
    fn shape_rules_match_generic_atomic_write_valid() {
        let positions = [
            0i64,
            512,
            4096,
            8192,
            12288,
            65536,
            1 << 20,
            (1 << 20) + 4096,
        ];
        let mut checked = 0;
        for &pos in &positions {
            for len in (0usize..=(1 << 17))
                .step_by(512)
                .chain([1, 3, 511, 4095, 4097])
            {
                let ours = check_shape(pos as u64, len as u64);
                let kernel = generic_atomic_write_valid(pos, len, true);
                assert_eq!(
                    ours.map_err(|e| -e.errno()),
                    kernel.map_err(|e| e.to_errno())
                );
                if ours.is_ok() {
                    let buffered = generic_atomic_write_valid(pos, len, false);
                    assert_eq!(
                        buffered.map_err(|e| e.to_errno()),
                        Err(-AtomicWriteError::Unsupported.errno())
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 2000);
    }
}
