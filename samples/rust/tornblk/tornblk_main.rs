// SPDX-License-Identifier: GPL-2.0

//! tornblk: a RAM block device that simulates power cuts.
//!
//! It models a disk with a volatile write cache: writes complete into the cache, a flush makes
//! them durable, a FUA write is durable at once. On command (now, after the next N writes, or at
//! a write drawn from a seed) the power is cut: the device builds the image a real disk could
//! show once power returns, with the crash model of `lib/untorn_logic` (cached writes kept, lost
//! or torn at sector granularity, but `REQ_ATOMIC` writes all or nothing), fails I/O with `EIO`
//! until it is powered on, and reports what it did. Devices are made and driven through
//! configfs; see `Documentation/block/tornblk.rst`.

use kernel::prelude::*;

mod configfs;
mod device;

/// Our safe abstractions over `kernel::bindings`: only the raw bindings and the block device
/// part, which is all this module needs.
#[path = "../../../rust/kernel_ext"]
pub mod kernel_ext {
    pub mod atomic_limits;
    pub mod bindings;
    pub mod block;
}

/// The pure logic shared with the host tool (`lib/untorn_logic`): its crate root, compiled as a
/// module of this crate (its `#![no_std]` is then redundant, not wrong).
#[allow(unused_attributes)]
#[path = "../../../lib/untorn_logic/src/lib.rs"]
pub mod untorn_logic;

module! {
    type: TornblkModule,
    name: "tornblk",
    authors: ["untorn developers"],
    description: "RAM block device that simulates power cuts",
    license: "GPL",
}

#[pin_data]
struct TornblkModule {
    #[pin]
    subsystem: kernel::configfs::Subsystem<configfs::Root>,
}

impl kernel::InPlaceModule for TornblkModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            subsystem <- configfs::subsystem(),
        })
    }
}
