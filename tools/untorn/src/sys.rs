// SPDX-License-Identifier: GPL-2.0

//! System calls the C library does not wrap with today's fields: `statx` with the atomic
//! write fields, and `pwritev2` with `RWF_ATOMIC`.

use std::{
    ffi::CString,
    fs::File,
    io::{self, IoSlice},
    os::unix::{ffi::OsStrExt, io::AsRawFd},
    path::Path,
};

/// `STATX_WRITE_ATOMIC`: want or got the `stx_atomic_write_*` fields.
pub const STATX_WRITE_ATOMIC: u32 = 0x0001_0000;
/// `STATX_ATTR_WRITE_ATOMIC`: the file supports atomic writes.
pub const STATX_ATTR_WRITE_ATOMIC: u64 = 0x0040_0000;
/// `RWF_ATOMIC`: write the whole buffer untorn, or fail.
pub const RWF_ATOMIC: i32 = 0x40;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct StatxTimestamp {
    tv_sec: i64,
    tv_nsec: u32,
    reserved: i32,
}

/// `struct statx` of `include/uapi/linux/stat.h` (Linux 6.16 and later).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Statx {
    pub stx_mask: u32,
    pub stx_blksize: u32,
    pub stx_attributes: u64,
    pub stx_nlink: u32,
    pub stx_uid: u32,
    pub stx_gid: u32,
    pub stx_mode: u16,
    spare0: u16,
    pub stx_ino: u64,
    pub stx_size: u64,
    pub stx_blocks: u64,
    pub stx_attributes_mask: u64,
    stx_atime: StatxTimestamp,
    stx_btime: StatxTimestamp,
    stx_ctime: StatxTimestamp,
    stx_mtime: StatxTimestamp,
    pub stx_rdev_major: u32,
    pub stx_rdev_minor: u32,
    pub stx_dev_major: u32,
    pub stx_dev_minor: u32,
    pub stx_mnt_id: u64,
    pub stx_dio_mem_align: u32,
    pub stx_dio_offset_align: u32,
    pub stx_subvol: u64,
    pub stx_atomic_write_unit_min: u32,
    pub stx_atomic_write_unit_max: u32,
    pub stx_atomic_write_segments_max: u32,
    pub stx_dio_read_offset_align: u32,
    pub stx_atomic_write_unit_max_opt: u32,
    spare2: u32,
    spare3: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<Statx>() == 256);

/// `statx(AT_FDCWD, path, 0, mask)`.
pub fn statx(path: &Path, mask: u32) -> io::Result<Statx> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = Statx::default();
    // SAFETY: `cpath` is a NUL-terminated string and `buf` a writable `struct statx` of the
    // kernel's size; both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            0,
            mask,
            &mut buf as *mut Statx,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf)
}

/// `pwritev2(fd, bufs, offset, flags)`; returns the number of bytes written.
pub fn pwritev2(file: &File, bufs: &[IoSlice<'_>], offset: u64, flags: i32) -> io::Result<usize> {
    let offset = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let count =
        i32::try_from(bufs.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec`, and every slice stays borrowed
    // for the duration of the call.
    let ret = unsafe {
        libc::pwritev2(
            file.as_raw_fd(),
            bufs.as_ptr().cast::<libc::iovec>(),
            count,
            offset,
            flags,
        )
    };
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// A buffer of `len` bytes aligned to `align`, as `O_DIRECT` needs.
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zero-filled buffer.
    pub fn new(len: usize, align: usize) -> Self {
        let storage = vec![0u8; len + align];
        let start = storage.as_ptr().align_offset(align);
        Self {
            storage,
            start,
            len,
        }
    }

    /// The aligned bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}
