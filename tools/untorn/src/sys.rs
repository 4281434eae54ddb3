// SPDX-License-Identifier: GPL-2.0

//! System calls: those the C library does not wrap with today's fields (`statx` with the
//! atomic write fields, `pwritev2` with `RWF_ATOMIC`), and thin safe wrappers over the ones
//! the tests and the exerciser need that `std` lacks (xattrs, `fallocate`, `renameat2`,
//! `mmap`, `mount`, ...).

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
/// `RWF_DSYNC` (`include/uapi/linux/fs.h`): this write is `O_DSYNC`.
pub const RWF_DSYNC: i32 = 0x2;

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

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Turns a C return value into `Ok(value)` or the errno.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Turns a `ssize_t` return value into a byte count or the errno.
fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// `fallocate(fd, mode, offset, len)`.
pub fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let offset = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let len = i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: Plain integer arguments on an open descriptor.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) }).map(drop)
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`.
pub fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (from, to) = (cpath(from)?, cpath(to)?);
    // SAFETY: Both paths are NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `statfs(path)`.
pub fn statfs(path: &Path) -> io::Result<libc::statfs> {
    let path = cpath(path)?;
    // SAFETY: `statfs` is plain data, for which all-zero bytes are a valid value.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `buf` a writable `struct statfs`.
    check(unsafe { libc::statfs(path.as_ptr(), &mut buf) })?;
    Ok(buf)
}

/// `setxattr(path, name, value, flags)` (`flags`: 0, `XATTR_CREATE` or `XATTR_REPLACE`).
pub fn setxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let (path, name) = (cpath(path)?, cstr(name)?);
    // SAFETY: NUL-terminated strings and a byte slice, all valid for the call.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// `getxattr(path, name)`: the whole value.
pub fn getxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (path, name) = (cpath(path)?, cstr(name)?);
    // SAFETY: A NULL buffer of size 0 asks for the value's size.
    let size = check_size(unsafe {
        libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0)
    })?;
    let mut value = vec![0u8; size];
    // SAFETY: `value` is writable for its length.
    let got = check_size(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    })?;
    value.truncate(got);
    Ok(value)
}

/// `listxattr(path)`: the names.
pub fn listxattr(path: &Path) -> io::Result<Vec<String>> {
    let path = cpath(path)?;
    // SAFETY: A NULL buffer of size 0 asks for the list's size.
    let size = check_size(unsafe { libc::listxattr(path.as_ptr(), std::ptr::null_mut(), 0) })?;
    let mut list = vec![0u8; size];
    // SAFETY: `list` is writable for its length.
    let got = check_size(unsafe {
        libc::listxattr(path.as_ptr(), list.as_mut_ptr().cast(), list.len())
    })?;
    Ok(list[..got]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// `removexattr(path, name)`.
pub fn removexattr(path: &Path, name: &str) -> io::Result<()> {
    let (path, name) = (cpath(path)?, cstr(name)?);
    // SAFETY: NUL-terminated strings valid for the call.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// `open(dir, O_TMPFILE | O_RDWR, mode)`: an unnamed file in `dir`.
pub fn open_tmpfile(dir: &Path, mode: u32) -> io::Result<File> {
    let dir = cpath(dir)?;
    // SAFETY: `dir` is NUL-terminated; the returned descriptor is owned by the `File` below.
    let fd = check(unsafe {
        libc::open(
            dir.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { <File as std::os::unix::io::FromRawFd>::from_raw_fd(fd) })
}

/// Gives an open file (e.g. an `O_TMPFILE` one) the name `to`, through `/proc/self/fd`.
pub fn link_open_file(file: &File, to: &Path) -> io::Result<()> {
    let from = cstr(&format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = cpath(to)?;
    // SAFETY: NUL-terminated paths valid for the call.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// `utimensat(AT_FDCWD, path, [atime, mtime], 0)`, times as (seconds, nanoseconds).
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let path = cpath(path)?;
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: `path` is NUL-terminated and `times` two valid timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) }).map(drop)
}

/// `syncfs(fd)`.
pub fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: An open descriptor.
    check(unsafe { libc::syncfs(file.as_raw_fd()) }).map(drop)
}

/// `posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`: drops the file's clean cached pages.
pub fn fadvise_dontneed(file: &File) -> io::Result<()> {
    // SAFETY: An open descriptor; the call takes no memory.
    let ret = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// `sync()`.
pub fn sync() {
    // SAFETY: No arguments; cannot fail.
    unsafe { libc::sync() }
}

/// `ioctl(fd, request, 0)`.
pub fn ioctl_no_arg(file: &File, request: u64) -> io::Result<i32> {
    // SAFETY: No pointer is passed; the kernel validates the request number.
    check(unsafe { libc::ioctl(file.as_raw_fd(), request as libc::Ioctl, 0usize) })
}

/// `mount(source, target, fstype, flags, data)`.
pub fn mount(
    source: &Path,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (source, target, fstype, data) =
        (cpath(source)?, cpath(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: NUL-terminated strings valid for the call; `data` is a string, as every
    // filesystem here parses it.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// `umount(target)`.
pub fn umount(target: &Path) -> io::Result<()> {
    let target = cpath(target)?;
    // SAFETY: A NUL-terminated path.
    check(unsafe { libc::umount(target.as_ptr()) }).map(drop)
}

/// `delete_module(name, O_NONBLOCK)`, as `rmmod` does.
pub fn delete_module(name: &str) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: A NUL-terminated name and integer flags.
    let ret = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard limit; returns the new limit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a writable `struct rlimit`.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid `struct rlimit`.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })?;
    Ok(limit.rlim_cur)
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: No arguments.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// A memory mapping of a file, unmapped when dropped.
pub struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `file` from `offset` (a multiple of the page size), readable and
    /// writable, `MAP_SHARED` if `shared`, else `MAP_PRIVATE`.
    pub fn new(file: &File, offset: u64, len: usize, shared: bool) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: A new mapping chosen by the kernel; nothing else refers to that memory.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                file.as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { addr, len })
    }

    /// The mapped bytes. Touching a page wholly beyond the end of the file raises `SIGBUS`, so
    /// callers map only within the file.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: The mapping is `len` bytes, readable and writable, and lives as long as
        // `self`; the exclusive borrow of `self` makes this the only slice over it.
        unsafe { std::slice::from_raw_parts_mut(self.addr.cast::<u8>(), self.len) }
    }

    /// `msync(MS_SYNC)` of the whole mapping.
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: The range is exactly our mapping.
        check(unsafe { libc::msync(self.addr, self.len, libc::MS_SYNC) }).map(drop)
    }

    /// Stores `byte` at `offset`: a volatile store, for threads that share the mapping (no
    /// Rust reference to its bytes exists then). The page must be within the file.
    pub fn store(&self, offset: usize, byte: u8) -> io::Result<()> {
        if offset >= self.len {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: Inside the mapping, which is writable; a volatile byte store races with
        // nothing Rust can observe.
        unsafe { self.addr.cast::<u8>().add(offset).write_volatile(byte) };
        Ok(())
    }

    /// `preadv2(file, ..., file_offset, 0)` of `len` bytes into the mapping at `offset`: the
    /// kernel copies into the mapped pages (faulting them in as needed, through the file's
    /// `page_mkwrite` for a shared mapping), and where it cannot (a page wholly beyond the end of
    /// the file) the read fails with `EFAULT` instead of raising `SIGBUS`.
    pub fn read_into(
        &self,
        file: &File,
        offset: usize,
        len: usize,
        file_offset: u64,
    ) -> io::Result<usize> {
        let iov = self.iovec(offset, len)?;
        let file_offset = libc::off_t::try_from(file_offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: One iovec inside our mapping; the kernel writes only there.
        check_size(unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, file_offset, 0) })
    }

    /// `pwritev2(file, ..., file_offset, flags)` of `len` bytes of the mapping from `offset`:
    /// the kernel copies from the mapped pages (faulting them in as needed).
    pub fn write_from(
        &self,
        file: &File,
        offset: usize,
        len: usize,
        file_offset: u64,
        flags: i32,
    ) -> io::Result<usize> {
        let iov = self.iovec(offset, len)?;
        let file_offset = libc::off_t::try_from(file_offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: One iovec inside our mapping; the kernel only reads it.
        check_size(unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, file_offset, flags) })
    }

    fn iovec(&self, offset: usize, len: usize) -> io::Result<libc::iovec> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(libc::iovec {
            // SAFETY: `offset` is inside the mapping (checked above).
            iov_base: unsafe { self.addr.cast::<u8>().add(offset) }.cast(),
            iov_len: len,
        })
    }
}

// SAFETY: The mapping belongs to the process, not to a thread. Its bytes are reached through
// `as_mut_slice` (which needs `&mut self`), volatile stores, or the kernel.
unsafe impl Send for Mapping {}
// SAFETY: As above: `&self` gives no Rust reference to the bytes.
unsafe impl Sync for Mapping {}

/// `fork()`s a child that exits at once, and reaps it: in a process with other threads this
/// takes the parent's `mmap_lock` for writing (to copy its address space), as any `fork` does.
pub fn fork_and_reap() -> io::Result<()> {
    // SAFETY: The child calls only `_exit`, which is async-signal-safe.
    let pid = check(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: Ends the child at once.
        unsafe { libc::_exit(0) };
    }
    match wait_child(pid, "the child could not start")? {
        0 => Ok(()),
        code => Err(io::Error::other(format!("the child exited with {code}"))),
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: The range is exactly our mapping, and no slice of it outlives `self`.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// User addresses the kernel must refuse with `EFAULT`: one page mapped `PROT_NONE` (kept
/// reserved for the life of this value, so that nothing of ours can be mapped there) and an
/// address below `mmap_min_addr`, which nothing can map.
pub struct BadAddresses {
    inaccessible: *mut libc::c_void,
    len: usize,
}

impl BadAddresses {
    pub fn new() -> io::Result<Self> {
        let len = page_size();
        // SAFETY: A new anonymous mapping chosen by the kernel.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            inaccessible: addr,
            len,
        })
    }

    /// The addresses, each refused for a page's length.
    pub fn addresses(&self) -> [(usize, &'static str); 2] {
        [
            (self.inaccessible as usize, "a PROT_NONE page"),
            (16, "an unmapped address"),
        ]
    }

    /// `read(fd, addr, len)` into one of our bad addresses.
    pub fn read_into(&self, file: &File, addr: usize) -> io::Result<usize> {
        self.ensure_ours(addr)?;
        // SAFETY: `addr` is one of ours, which no Rust object occupies: the kernel either
        // faults on it or, were it ever mapped, writes where nothing of ours lives.
        check_size(unsafe { libc::read(file.as_raw_fd(), addr as *mut libc::c_void, self.len) })
    }

    /// `write(fd, addr, len)` from one of our bad addresses.
    pub fn write_from(&self, file: &File, addr: usize) -> io::Result<usize> {
        self.ensure_ours(addr)?;
        // SAFETY: The kernel only reads from `addr`, which is checked as user memory.
        check_size(unsafe { libc::write(file.as_raw_fd(), addr as *const libc::c_void, self.len) })
    }

    /// `pwritev(fd, [good, bad], offset)`: a good buffer followed by one of our bad addresses.
    pub fn pwritev_good_then_bad(
        &self,
        file: &File,
        good: &[u8],
        addr: usize,
        offset: u64,
    ) -> io::Result<usize> {
        self.ensure_ours(addr)?;
        let iov = [
            libc::iovec {
                iov_base: good.as_ptr() as *mut libc::c_void,
                iov_len: good.len(),
            },
            libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: self.len,
            },
        ];
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: The kernel only reads from the iovecs: `good` is borrowed for the call and
        // `addr` is checked as user memory.
        check_size(unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), 2, offset) })
    }

    fn ensure_ours(&self, addr: usize) -> io::Result<()> {
        if self.addresses().iter().any(|&(a, _)| a == addr) {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        }
    }
}

impl Drop for BadAddresses {
    fn drop(&mut self) {
        // SAFETY: Exactly our mapping.
        unsafe { libc::munmap(self.inaccessible, self.len) };
    }
}

/// Calls `mount(2)` in a child process that first drops to `uid`/`gid` (and so loses every
/// capability); returns the child's result.
pub fn mount_as_user(
    uid: u32,
    gid: u32,
    source: &Path,
    target: &Path,
    fstype: &str,
) -> io::Result<()> {
    // Everything is prepared before fork: the child only makes async-signal-safe calls.
    let (source, target, fstype) = (cpath(source)?, cpath(target)?, cstr(fstype)?);
    // SAFETY: The child calls only setgroups, setgid, setuid, mount and _exit.
    let pid = check(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: Async-signal-safe calls on data prepared before fork; `_exit` never returns.
        unsafe {
            let errno = if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                // 255: could not drop privileges, which the caller must not mistake for a
                // mount result.
                255
            } else if libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            ) == 0
            {
                0
            } else {
                *libc::__errno_location()
            };
            libc::_exit(errno);
        }
    }
    match wait_child(pid, "the child could not drop its privileges")? {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Waits for the child `pid` and returns its exit code; 255, which the children here use when
/// they could not set themselves up, is the error `setup_failed`.
fn wait_child(pid: libc::pid_t, setup_failed: &str) -> io::Result<i32> {
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is writable.
    check(unsafe { libc::waitpid(pid, &mut status, 0) })?;
    if !libc::WIFEXITED(status) {
        return Err(io::Error::other(format!(
            "child ended abnormally: status {status:#x}"
        )));
    }
    match libc::WEXITSTATUS(status) {
        255 => Err(io::Error::other(setup_failed.to_string())),
        code => Ok(code),
    }
}

/// `sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`: starts writeback of the whole file.
pub fn sync_file_range_write(file: &File) -> io::Result<()> {
    // SAFETY: A plain system call on our descriptor.
    check(unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) })
        .map(drop)
}

/// Runs `f` in a child process with the user and group IDs `uid` and `gid` and no supplementary
/// groups (so without capabilities), and returns its result as the child's exit status (0 to
/// 254). `f` runs after `fork` in a copy of this process: it must only make async-signal-safe
/// calls on data prepared before (no allocation, no locks).
pub fn run_as_user(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> io::Result<i32> {
    // SAFETY: The child calls only setgroups, setgid, setuid, what `f` promises to call, and
    // _exit.
    let pid = check(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: Async-signal-safe calls; `_exit` never returns.
        unsafe {
            let code = if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                255
            } else {
                f().clamp(0, 254)
            };
            libc::_exit(code);
        }
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is writable.
    check(unsafe { libc::waitpid(pid, &mut status, 0) })?;
    if !libc::WIFEXITED(status) {
        return Err(io::Error::other(format!(
            "child ended abnormally: status {status:#x}"
        )));
    }
    match libc::WEXITSTATUS(status) {
        255 => Err(io::Error::other("the child could not drop its privileges")),
        code => Ok(code),
    }
}

/// `setxattr(path, name, value, 0)` by a process of `uid`/`gid` without capabilities.
pub fn setxattr_as_user(
    uid: u32,
    gid: u32,
    path: &Path,
    name: &str,
    value: &[u8],
) -> io::Result<()> {
    let (path, name) = (cpath(path)?, cstr(name)?);
    let code = run_as_user(uid, gid, || {
        // SAFETY: NUL-terminated strings and a byte slice prepared before `fork`.
        let ret = unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if ret == 0 {
            0
        } else {
            // SAFETY: `errno` of this thread.
            unsafe { *libc::__errno_location() }
        }
    })?;
    match code {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// `listxattr(path)` by a process of `uid`/`gid` without capabilities: the names (a list of
/// at most 64 KiB, the kernel's limit).
pub fn listxattr_as_user(uid: u32, gid: u32, path: &Path) -> io::Result<Vec<String>> {
    const MAX: usize = 65536;
    let path = cpath(path)?;
    // The child writes the list into memory it shares with us: a shared anonymous mapping.
    // SAFETY: A new mapping chosen by the kernel; nothing else refers to that memory.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MAX,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if shared == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let result = run_as_user(uid, gid, || {
        // SAFETY: `shared` is writable for `MAX` bytes; the first 8 take the list's length.
        unsafe {
            let list = shared.cast::<u8>().add(8);
            let got = libc::listxattr(path.as_ptr(), list.cast(), MAX - 8);
            if got < 0 {
                return *libc::__errno_location();
            }
            shared.cast::<u64>().write(got as u64);
            0
        }
    });
    let names = result.and_then(|code| {
        if code != 0 {
            return Err(io::Error::from_raw_os_error(code));
        }
        // SAFETY: The child has exited; it wrote a length of at most `MAX - 8` and the list.
        let list = unsafe {
            let len = (shared.cast::<u64>().read() as usize).min(MAX - 8);
            std::slice::from_raw_parts(shared.cast::<u8>().add(8), len)
        };
        Ok(list
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect())
    });
    // SAFETY: Exactly our mapping; the slice above is gone.
    unsafe { libc::munmap(shared, MAX) };
    names
}

/// Anonymous memory taken and touched, so that the kernel has that much less for the page
/// cache (with no swap it cannot be reclaimed); given back when dropped.
pub struct Balloon {
    addr: *mut libc::c_void,
    len: usize,
}

impl Balloon {
    pub fn inflate(len: usize) -> io::Result<Self> {
        // SAFETY: A new private anonymous mapping chosen by the kernel.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let page = page_size();
        for offset in (0..len).step_by(page) {
            // SAFETY: Within our writable mapping; a write gives each page its own frame
            // instead of the shared zero page.
            unsafe { addr.cast::<u8>().add(offset).write_volatile(1) };
        }
        Ok(Self { addr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Balloon {
    fn drop(&mut self) {
        // SAFETY: Exactly our mapping, with no reference into it.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// Reads up to `len` bytes at `offset`, fewer only at end of file.
pub fn read_range(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// The symbolic name of an errno, for messages (`ENOTTY`), or `errno N`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EDQUOT => "EDQUOT",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// An `io::Error` as `EINVAL (Invalid argument)`, or its text if it carries no errno.
pub fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => format!(
            "{} ({})",
            errno_name(errno),
            io::Error::from_raw_os_error(errno)
        ),
        None => e.to_string(),
    }
}

/// `ioctl(fd, UNTORN_IOC_GET_MODE, &mode)`: the file's untorn mode.
pub fn get_mode(file: &File) -> io::Result<untorn_logic::uapi::UntornMode> {
    let mut mode = untorn_logic::uapi::UntornMode::default();
    // SAFETY: `mode` is a writable `struct untorn_mode`, the size the request encodes.
    check(unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            untorn_logic::uapi::UNTORN_IOC_GET_MODE as libc::Ioctl,
            &mut mode as *mut untorn_logic::uapi::UntornMode,
        )
    })?;
    Ok(mode)
}

/// `ioctl(fd, UNTORN_IOC_SET_MODE, &mode)`.
pub fn set_mode(file: &File, mode: &untorn_logic::uapi::UntornMode) -> io::Result<()> {
    // SAFETY: `mode` is a readable `struct untorn_mode`, the size the request encodes; the
    // kernel only reads it.
    check(unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            untorn_logic::uapi::UNTORN_IOC_SET_MODE as libc::Ioctl,
            mode as *const untorn_logic::uapi::UntornMode,
        )
    })
    .map(drop)
}

impl BadAddresses {
    /// `ioctl(fd, request, addr)` with one of our bad addresses as the argument.
    pub fn ioctl(&self, file: &File, request: u32, addr: usize) -> io::Result<i32> {
        self.ensure_ours(addr)?;
        // SAFETY: `addr` is one of ours, which no Rust object occupies: the kernel faults on it
        // (or, were it ever mapped, reads or writes where nothing of ours lives).
        check(unsafe { libc::ioctl(file.as_raw_fd(), request as libc::Ioctl, addr) })
    }
}

/// A user buffer of which only the first `mapped` bytes are readable and writable; the rest,
/// up to `len`, faults: a copy from it faults part way.
pub struct PartlyMapped {
    addr: *mut libc::c_void,
    mapped: usize,
    len: usize,
    tail: Tail,
}

/// What the faulting tail of a [`PartlyMapped`] buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Unmapped again after the mapping was made (another mapping could land there later,
    /// which the tests rule out by checking the outcome).
    Unmapped,
    /// Kept mapped `PROT_NONE`, so that nothing else can be mapped there.
    ProtNone,
}

impl PartlyMapped {
    /// `len` bytes from a fresh anonymous mapping, the pages from `mapped` on made to fault as
    /// `tail` says. Both must be multiples of the page size, `mapped < len`.
    pub fn new(mapped: usize, len: usize, tail: Tail) -> io::Result<Self> {
        let page = page_size();
        if mapped % page != 0 || len % page != 0 || mapped >= len {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: A new anonymous mapping chosen by the kernel.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: The tail of our own mapping, referred to by nothing.
        let ret = unsafe {
            let start = addr.cast::<u8>().add(mapped).cast();
            match tail {
                Tail::Unmapped => libc::munmap(start, len - mapped),
                Tail::ProtNone => libc::mprotect(start, len - mapped, libc::PROT_NONE),
            }
        };
        if ret != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: Exactly our mapping.
            unsafe { libc::munmap(addr, len) };
            return Err(e);
        }
        Ok(Self {
            addr,
            mapped,
            len,
            tail,
        })
    }

    /// The mapped head.
    pub fn head_mut(&mut self) -> &mut [u8] {
        // SAFETY: The first `mapped` bytes are our readable and writable mapping, borrowed
        // exclusively through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.addr.cast::<u8>(), self.mapped) }
    }

    /// `pwritev2(fd, [whole buffer], offset, flags)`: the kernel faults after `mapped` bytes.
    pub fn pwritev2(&self, file: &File, offset: u64, flags: i32) -> io::Result<usize> {
        let iov = libc::iovec {
            iov_base: self.addr,
            iov_len: self.len,
        };
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: The kernel only reads from the iovec's memory and checks it as user memory;
        // the head is ours, and the tail is either reserved by us or unmapped.
        check_size(unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, offset, flags) })
    }
}

impl Drop for PartlyMapped {
    fn drop(&mut self) {
        let len = match self.tail {
            Tail::Unmapped => self.mapped,
            Tail::ProtNone => self.len,
        };
        // SAFETY: What is left of our mapping, with no slice into it left.
        unsafe { libc::munmap(self.addr, len) };
    }
}

/// Reads up to `len` bytes at `offset` of the file at `path` with `O_DIRECT` (from the
/// device, past any page cache), fewer only at end of file.
pub fn read_direct_range(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
    const ALIGN: u64 = 4096;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let start = offset / ALIGN * ALIGN;
    let end = (offset + len as u64).div_ceil(ALIGN) * ALIGN;
    let span =
        usize::try_from(end - start).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let mut buf = AlignedBuf::new(span, ALIGN as usize);
    let slice = buf.as_mut_slice();
    let mut done = 0;
    while done < span {
        let n = file.read_at(&mut slice[done..], start + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
        if done as u64 % ALIGN != 0 {
            // A short read ends at EOF.
            break;
        }
    }
    let skip = (offset - start) as usize;
    Ok(slice[skip.min(done)..(skip + len).min(done)].to_vec())
}

/// `CAP_FOWNER`.
pub const CAP_FOWNER: u32 = 3;
/// `CAP_DAC_OVERRIDE`.
pub const CAP_DAC_OVERRIDE: u32 = 1;
/// `CAP_SYS_ADMIN`.
pub const CAP_SYS_ADMIN: u32 = 21;

/// Runs `body` in a child process whose real, effective, saved and filesystem ids are
/// `uid`/`gid`, with no supplementary group and only the capabilities `caps` (permitted and
/// effective). Returns what `body` returned: 0 or an errno.
///
/// `body` runs after `fork` in a copy of a possibly multi-threaded process, so it must only
/// make async-signal-safe calls (plain system calls; no allocation, no locks).
pub fn in_child_as(
    uid: u32,
    gid: u32,
    caps: &[u32],
    body: impl FnOnce() -> i32,
) -> io::Result<i32> {
    let mut mask = 0u64;
    for &cap in caps {
        mask |= 1u64 << cap;
    }
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask as u32,
            permitted: mask as u32,
            inheritable: 0,
        },
        CapData {
            effective: (mask >> 32) as u32,
            permitted: (mask >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: The child makes only raw system calls on data prepared before `fork`, then
    // `_exit`s.
    let pid = check(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: Raw system calls (which change only this single-threaded child) on data
        // prepared before fork; `_exit` never returns.
        unsafe {
            let dropped = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
                == 0
                && libc::syscall(libc::SYS_setresgid, gid, gid, gid) == 0
                && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) == 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0
                && libc::syscall(libc::SYS_capset, &header, data.as_ptr()) == 0;
            if !dropped {
                libc::_exit(255);
            }
            libc::_exit(body());
        }
    }
    wait_child(pid, "the child could not change its credentials")
}

/// What a [`ScriptedChild`] does on request.
#[derive(Clone, Copy, Debug)]
pub enum ChildOp {
    /// `pwritev2(file, len bytes of byte, offset, RWF_ATOMIC)` from the child's own buffer.
    AtomicWrite { offset: u64, byte: u8 },
    /// `munmap(addr, len)`.
    Unmap { addr: usize, len: usize },
    /// `mmap(addr, len, RW, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS)`, filled with `byte`.
    MapFixed { addr: usize, len: usize, byte: u8 },
    /// Whether `len` bytes at `addr` all hold `byte` (`EBADMSG` if not).
    Holds { addr: usize, len: usize, byte: u8 },
    /// Closes the file.
    Close,
}

/// A child process with its own address space that makes system calls on request, so that a
/// test can look at that address space from outside (`/proc/PID/maps`) between two calls, and
/// outlive a mount while the child lives on.
pub struct ScriptedChild {
    pid: libc::pid_t,
    requests: File,
    replies: File,
}

impl ScriptedChild {
    /// Forks a child that holds `file` and a buffer of `len` bytes for its writes.
    pub fn spawn(file: &File, len: usize) -> io::Result<Self> {
        let mut to_child = [0; 2];
        let mut from_child = [0; 2];
        // SAFETY: Both arrays have room for two descriptors.
        check(unsafe { libc::pipe2(to_child.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: As above.
        check(unsafe { libc::pipe2(from_child.as_mut_ptr(), libc::O_CLOEXEC) })?;
        let mut buf = vec![0u8; len];
        let fd = file.as_raw_fd();
        // SAFETY: The child only makes raw system calls on memory allocated before the fork
        // and ends with `_exit`.
        let pid = check(unsafe { libc::fork() })?;
        if pid == 0 {
            // SAFETY: Raw system calls on descriptors and memory prepared before the fork.
            unsafe { child_loop(to_child[0], from_child[1], fd, &mut buf) };
        }
        // SAFETY: The ends the parent keeps become `File`s (owned once each); the others close.
        unsafe {
            libc::close(to_child[0]);
            libc::close(from_child[1]);
            Ok(Self {
                pid,
                requests: <File as std::os::fd::FromRawFd>::from_raw_fd(to_child[1]),
                replies: <File as std::os::fd::FromRawFd>::from_raw_fd(from_child[0]),
            })
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Has the child do `op`; its errno as an error.
    pub fn call(&mut self, op: ChildOp) -> io::Result<()> {
        use std::io::{Read, Write};
        let (code, a, b, c): (u8, u64, u64, u64) = match op {
            ChildOp::AtomicWrite { offset, byte } => (b'w', offset, 0, u64::from(byte)),
            ChildOp::Unmap { addr, len } => (b'u', addr as u64, len as u64, 0),
            ChildOp::MapFixed { addr, len, byte } => (b'm', addr as u64, len as u64, byte.into()),
            ChildOp::Holds { addr, len, byte } => (b'h', addr as u64, len as u64, byte.into()),
            ChildOp::Close => (b'c', 0, 0, 0),
        };
        let mut request = [0u8; 25];
        request[0] = code;
        request[1..9].copy_from_slice(&a.to_ne_bytes());
        request[9..17].copy_from_slice(&b.to_ne_bytes());
        request[17..25].copy_from_slice(&c.to_ne_bytes());
        self.requests.write_all(&request)?;
        let mut reply = [0u8; 4];
        self.replies.read_exact(&mut reply)?;
        match i32::from_ne_bytes(reply) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

impl Drop for ScriptedChild {
    fn drop(&mut self) {
        // SAFETY: Our child: killed (it may be waiting for a request) and reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// The child of [`ScriptedChild`]: requests in, errnos out, until the request pipe closes.
///
/// # Safety
///
/// Runs right after `fork`: it makes only raw system calls, on `requests`, `replies`, `fd` and
/// `buf` (all set up before the fork), and never returns.
unsafe fn child_loop(requests: i32, replies: i32, fd: i32, buf: &mut [u8]) -> ! {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    loop {
        let mut request = [0u8; 25];
        // SAFETY: `request` is writable for its length.
        let n = unsafe { libc::read(requests, request.as_mut_ptr().cast(), request.len()) };
        if n != request.len() as isize {
            // SAFETY: Ends the child.
            unsafe { libc::_exit(0) };
        }
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&request[i..i + 8]);
            u64::from_ne_bytes(bytes)
        };
        let (a, b, c) = (word(1), word(9), word(17));
        let result: i32 = match request[0] {
            b'w' => {
                buf.fill(c as u8);
                let iov = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                // SAFETY: One segment over our buffer.
                let n = unsafe { libc::pwritev2(fd, &iov, 1, a as i64, RWF_ATOMIC) };
                if n == buf.len() as isize {
                    0
                } else if n < 0 {
                    errno()
                } else {
                    libc::EIO
                }
            }
            // SAFETY: Whatever the parent names; only this child's address space changes.
            b'u' => match unsafe { libc::munmap(a as *mut _, b as usize) } {
                0 => 0,
                _ => errno(),
            },
            b'm' => {
                // SAFETY: As above.
                let p = unsafe {
                    libc::mmap(
                        a as *mut _,
                        b as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    errno()
                } else {
                    // SAFETY: Just mapped, `b` bytes, writable.
                    unsafe { std::ptr::write_bytes(p.cast::<u8>(), c as u8, b as usize) };
                    0
                }
            }
            b'h' => {
                // SAFETY: The parent names a range it had mapped here, readable.
                let bytes = unsafe { std::slice::from_raw_parts(a as *const u8, b as usize) };
                if bytes.iter().all(|&x| x == c as u8) {
                    0
                } else {
                    libc::EBADMSG
                }
            }
            // SAFETY: Our inherited descriptor.
            b'c' => match unsafe { libc::close(fd) } {
                0 => 0,
                _ => errno(),
            },
            _ => libc::EINVAL,
        };
        let reply = result.to_ne_bytes();
        // SAFETY: `reply` is readable for its length.
        unsafe { libc::write(replies, reply.as_ptr().cast(), reply.len()) };
    }
}

/// The mappings of process `pid` (`/proc/PID/maps`), as `(start, end)`.
pub fn mappings(pid: libc::pid_t) -> io::Result<Vec<(usize, usize)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut found = Vec::new();
    for line in text.lines() {
        let range = line.split_whitespace().next().unwrap_or_default();
        if let Some((start, end)) = range.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                found.push((start, end));
            }
        }
    }
    Ok(found)
}
