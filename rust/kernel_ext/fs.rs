// SPDX-License-Identifier: GPL-2.0

//! File-level helpers.
//!
//! C headers: [`include/linux/fs.h`](srctree/include/linux/fs.h),
//! [`include/linux/uio.h`](srctree/include/linux/uio.h).

use core::mem::MaybeUninit;
use kernel::{
    bindings,
    error::to_result,
    prelude::*, //
};

use super::bindings as ext;

/// Asks the kernel's `generic_atomic_write_valid()` whether a write of `len` bytes at `pos`
/// from a single user buffer has the shape of an atomic write.
///
/// `direct` says whether the write is a direct (`O_DIRECT`) one: upstream refuses buffered
/// atomic writes with `EOPNOTSUPP`, which is the gap untorn fills. No memory is accessed: the
/// iterator describes a user buffer that is never read.
pub fn generic_atomic_write_valid(pos: i64, len: usize, direct: bool) -> Result {
    let mut flags = ext::UNTORN_IOCB_ATOMIC;
    if direct {
        flags |= bindings::IOCB_DIRECT as c_int;
    }
    // SAFETY: `struct kiocb` holds integers, raw pointers, an optional function pointer and
    // unions of those, for all of which all-zero bytes are a valid value (`= {}` in C).
    let mut kiocb: bindings::kiocb = unsafe { MaybeUninit::zeroed().assume_init() };
    kiocb.ki_pos = pos;
    kiocb.ki_flags = flags;
    // SAFETY: As above: `struct iov_iter` holds integers, raw pointers and unions of those.
    let mut iter: bindings::iov_iter = unsafe { MaybeUninit::zeroed().assume_init() };

    // SAFETY: `iter` is a valid, exclusively borrowed `iov_iter`, which the helper overwrites.
    // `ITER_SOURCE` is a valid direction, and the user address is never dereferenced here.
    unsafe {
        ext::untorn_helper_iov_iter_ubuf(
            &mut iter,
            bindings::ITER_SOURCE,
            core::ptr::null_mut(),
            len,
        )
    };

    // SAFETY: Both pointers come from live, exclusive references; the function only reads the
    // position, the flags and the iterator's type and count.
    to_result(unsafe { bindings::generic_atomic_write_valid(&mut kiocb, &mut iter) })
}
