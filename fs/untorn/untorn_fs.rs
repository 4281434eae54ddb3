// SPDX-License-Identifier: GPL-2.0

//! untorn: untorn buffered writes by writethrough.
//!
//! A buffered write to a file in writethrough mode is copied into the page cache and sent to the
//! device at once as one `REQ_ATOMIC` write; see `Documentation/filesystems/untorn.rst`.
//!
//! untorn stacks over a directory of a lower filesystem (XFS, ext4): the lower keeps every name
//! and attribute, untorn owns the data path with its own page cache. The files mirror the C split
//! of operations: `super.rs`, `namei.rs` (directories), `inode.rs`, `file.rs`, `aops.rs`
//! (page cache), with the mount API in `untorn_mount.c`.

use kernel::ffi::c_char;

use kernel::{prelude::*, seq_file::SeqFile, sync::aref::ARef};

mod aops;
mod backend;
mod counters;
mod file;
mod inode;
mod mode;
mod namei;
#[path = "super.rs"]
mod super_block;
mod writethrough;

use kernel_ext::{
    folio::{LockedFolio, OwnedLockedFolio},
    lower::Acl,
    ops::{
        DelayedCall, Iattr, InValue, Kiocb, Kstat, OutBuffer, Readahead, Registration, StackedFs,
        Statfs, UpperFile, UserIter, Writeback,
    },
    vfs::{Dentry, DirContext, Inode, SuperBlock},
};

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

kernel::sync::global_lock! {
    // SAFETY: Initialised in `UntornModule::init` before the filesystem is registered, which is
    // before any mount can use it.
    unsafe(uninit) static DEBUGFS_ROOT: Mutex<Option<kernel::debugfs::Dir>> = None;
}

/// The debugfs directory of `name` under `untorn/`, for one mount.
pub(crate) fn debugfs_dir(name: &CStr) -> kernel::debugfs::Dir {
    match DEBUGFS_ROOT.lock().as_ref() {
        Some(root) => root.subdir(name),
        None => kernel::debugfs::Dir::new(name),
    }
}

struct UntornModule {
    _registration: Registration,
}

impl kernel::Module for UntornModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // SAFETY: Called once, first, as the lock requires.
        unsafe { DEBUGFS_ROOT.init() };
        *DEBUGFS_ROOT.lock() = Some(kernel::debugfs::Dir::new(c"untorn"));
        kernel_ext::bounce::init()?;
        Ok(UntornModule {
            _registration: Registration::new()?,
        })
    }
}

impl Drop for UntornModule {
    fn drop(&mut self) {
        // No mount is left (each holds a module reference): remove `untorn/` from debugfs.
        *DEBUGFS_ROOT.lock() = None;
        kernel_ext::bounce::exit();
    }
}

/// The untorn filesystem: each operation is implemented in the file of its kind.
pub(crate) struct Untorn;

impl StackedFs for Untorn {
    type SbData = super_block::UntornSb;
    type InodeData = mode::UntornInode;

    fn new_inode_data() -> mode::UntornInode {
        mode::UntornInode::new()
    }

    fn statfs(dentry: &Dentry<Self>, buf: &mut Statfs) -> Result {
        super_block::statfs(dentry, buf)
    }
    fn show_options(sb: &SuperBlock<Self>, seq: &SeqFile) {
        super_block::show_options(sb, seq)
    }
    fn sync_fs(sb: &SuperBlock<Self>, wait: bool) -> Result {
        super_block::sync_fs(sb, wait)
    }

    fn lookup(dir: &Inode<Self>, dentry: &Dentry<Self>) -> Result<Option<ARef<Inode<Self>>>> {
        namei::lookup(dir, dentry)
    }
    fn create(dir: &Inode<Self>, dentry: &Dentry<Self>, mode: u16) -> Result {
        namei::create(dir, dentry, mode)
    }
    fn mkdir(dir: &Inode<Self>, dentry: &Dentry<Self>, mode: u16) -> Result {
        namei::mkdir(dir, dentry, mode)
    }
    fn mknod(dir: &Inode<Self>, dentry: &Dentry<Self>, mode: u16, dev: u32) -> Result {
        namei::mknod(dir, dentry, mode, dev)
    }
    fn symlink(dir: &Inode<Self>, dentry: &Dentry<Self>, target: &CStr) -> Result {
        namei::symlink(dir, dentry, target)
    }
    fn tmpfile(dir: &Inode<Self>, file: &UpperFile, mode: u16) -> Result {
        namei::tmpfile(dir, file, mode)
    }
    fn link(old: &Dentry<Self>, dir: &Inode<Self>, new: &Dentry<Self>) -> Result {
        namei::link(old, dir, new)
    }
    fn unlink(dir: &Inode<Self>, dentry: &Dentry<Self>) -> Result {
        namei::unlink(dir, dentry)
    }
    fn rmdir(dir: &Inode<Self>, dentry: &Dentry<Self>) -> Result {
        namei::rmdir(dir, dentry)
    }
    fn rename(
        old_dir: &Inode<Self>,
        old: &Dentry<Self>,
        new_dir: &Inode<Self>,
        new: &Dentry<Self>,
        flags: u32,
    ) -> Result {
        namei::rename(old_dir, old, new_dir, new, flags)
    }

    fn permission(inode: &Inode<Self>, mask: i32) -> Result {
        inode::permission(inode, mask)
    }
    fn getattr(dentry: &Dentry<Self>, stat: &mut Kstat, request_mask: u32, flags: u32) -> Result {
        inode::getattr(dentry, stat, request_mask, flags)
    }
    fn update_atime(inode: &Inode<Self>) -> bool {
        inode::update_atime(inode)
    }
    fn setattr(dentry: &Dentry<Self>, attr: &Iattr) -> Result {
        inode::setattr(dentry, attr)
    }
    fn listxattr(dentry: &Dentry<Self>, buf: OutBuffer) -> Result<usize> {
        inode::listxattr(dentry, buf)
    }
    fn getxattr(dentry: &Dentry<Self>, name: &CStr, buf: OutBuffer) -> Result<usize> {
        inode::getxattr(dentry, name, buf)
    }
    fn setxattr(dentry: &Dentry<Self>, name: &CStr, value: InValue, flags: i32) -> Result {
        inode::setxattr(dentry, name, value, flags)
    }
    fn get_inode_acl(inode: &Inode<Self>, acl_type: i32) -> Result<Acl> {
        inode::get_inode_acl(inode, acl_type)
    }
    fn get_acl(dentry: &Dentry<Self>, acl_type: i32) -> Result<Acl> {
        inode::get_acl(dentry, acl_type)
    }
    fn set_acl(dentry: &Dentry<Self>, acl: Acl, acl_type: i32) -> Result {
        inode::set_acl(dentry, acl, acl_type)
    }
    fn get_link(dentry: &Dentry<Self>, done: DelayedCall) -> Result<*const c_char> {
        inode::get_link(dentry, done)
    }

    fn open(inode: &Inode<Self>, file: &UpperFile) -> Result {
        file::open(inode, file)
    }
    fn open_dir(inode: &Inode<Self>, file: &UpperFile) -> Result {
        file::open_dir(inode, file)
    }
    fn read_iter(kiocb: &mut Kiocb<'_, Self>, iter: &mut UserIter) -> Result<usize> {
        file::read_iter(kiocb, iter)
    }
    fn write_iter(kiocb: &mut Kiocb<'_, Self>, iter: &mut UserIter) -> Result<usize> {
        file::write_iter(kiocb, iter)
    }
    fn fsync(
        file: &UpperFile,
        inode: &Inode<Self>,
        start: i64,
        end: i64,
        datasync: bool,
    ) -> Result {
        file::fsync(file, inode, start, end, datasync)
    }
    fn fallocate(
        file: &UpperFile,
        inode: &Inode<Self>,
        mode: i32,
        offset: i64,
        len: i64,
    ) -> Result {
        file::fallocate(file, inode, mode, offset, len)
    }
    fn iterate_shared(file: &UpperFile, ctx: &mut DirContext) -> Result {
        file::iterate_shared(file, ctx)
    }
    fn llseek_dir(file: &UpperFile, offset: i64, whence: i32) -> Result<i64> {
        file::llseek_dir(file, offset, whence)
    }
    fn ioctl(file: &UpperFile, inode: &Inode<Self>, cmd: u32, arg: usize) -> Result<isize> {
        mode::ioctl(file, inode, cmd, arg)
    }

    fn read_folio(inode: &Inode<Self>, folio: LockedFolio<'_>) -> Result {
        aops::read_folio(inode, folio)
    }

    fn readahead(inode: &Inode<Self>, request: Readahead<'_>) {
        aops::readahead(inode, request)
    }
    fn writepages(inode: &Inode<Self>, wbc: &mut Writeback<'_>) -> Result {
        aops::writepages(inode, wbc)
    }
    fn write_begin(inode: &Inode<Self>, pos: i64, len: usize) -> Result<OwnedLockedFolio> {
        aops::write_begin(inode, pos, len)
    }
    fn write_end(
        inode: &Inode<Self>,
        pos: i64,
        len: usize,
        copied: usize,
        folio: OwnedLockedFolio,
    ) -> usize {
        aops::write_end(inode, pos, len, copied, folio)
    }
}

#[kunit_tests(untorn_foundation)]
mod tests {
    use super::kernel_ext::{
        atomic_limits::AtomicLimits, bindings as ext, fs::generic_atomic_write_valid,
    };
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

    /// Raw mode sends an untorn write as one `REQ_ATOMIC` bio only if it has the shape the block
    /// layer takes (`blk_validate_atomic_write_op_size()` and the boundary rule).
    #[test]
    fn atomic_bios_take_the_block_layers_shapes() {
        let limits = AtomicLimits::new(512, 4096, 65536, 65536, 1 << 20);
        assert!(limits.is_ok());
        let Ok(limits) = limits else { return };
        for (pos, len, ok) in [
            (0u64, 4096u64, true),
            (65536, 65536, true),
            ((1 << 20) - 4096, 4096, true),
            (4096, 8192, false),
            (0, 3 * 4096, false),
            (0, 2048, false),
            (0, 131072, false),
            (0, 0, false),
        ] {
            assert_eq!(limits.accepts(pos, len), ok);
        }
        // A boundary below the largest write is no valid device's.
        assert!(AtomicLimits::new(512, 4096, 65536, 65536, 32768).is_err());
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
