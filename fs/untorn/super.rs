// SPDX-License-Identifier: GPL-2.0

//! Super block: mounting over a lower directory (stacked mode) or a block device (raw mode),
//! `statfs`, options, sync and unmount.

use core::sync::atomic::{AtomicU8, Ordering};

use kernel::{
    bindings, debugfs,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    str::CString,
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
};

use kernel::ffi::c_char;

use crate::{
    backend::{Backend, DeviceBackend, LowerFileBackend},
    counters::{Counters, Latency},
    kernel_ext::{
        bio::BlockDevice,
        bounce::BounceCache,
        ops::{self, Statfs},
        publication::Publication,
        vfs::{Dentry, PrivateMount, SuperBlock},
    },
    untorn_logic::mount_options::WritethroughPolicy,
    Untorn,
};

/// `s_magic` and `statfs`'s `f_type`: "unto", unused in `include/uapi/linux/magic.h`.
pub(crate) const UNTORN_SUPER_MAGIC: u64 = 0x756e_746f;

/// The name of the one file of a raw-mode mount.
pub(crate) const RAW_FILE_NAME: &CStr = c"data";

/// What an untorn mount owns besides the stacking state.
pub(crate) struct UntornSb {
    /// Where file data is stored: the lower files, or a block device.
    backend: KBox<dyn Backend>,
    /// The `writethrough=` policy, changed by remount.
    policy: AtomicU8,
    /// The per-mount counters, shown in debugfs.
    counters: Pin<KBox<debugfs::File<Counters>>>,
    /// The latency histogram of writethrough writes, shown in debugfs.
    latency: Pin<KBox<debugfs::File<Latency>>>,
    /// Where writethrough writes publish into the page cache (see `writethrough.rs`).
    publication: Publication,
    /// Idle bounce buffers of untorn writes, per address space; listed in debugfs.
    bounce_cache: Pin<KBox<debugfs::File<BounceCache>>>,
    /// Testing only, in debugfs (root): writethrough copies into the page cache outside the
    /// publication slots, so that racing readers can see half of an untorn write. The negative
    /// control of the racing-readers test, which shows that the test catches such reads.
    skip_publication: Pin<KBox<debugfs::File<Atomic<bool>>>>,
    _debugfs_dir: debugfs::Dir,
}

impl UntornSb {
    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    pub(crate) fn policy(&self) -> WritethroughPolicy {
        policy_from_c(i32::from(self.policy.load(Ordering::Relaxed)))
            .unwrap_or(WritethroughPolicy::Marked)
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn latency(&self) -> &Latency {
        &self.latency
    }

    pub(crate) fn publication(&self) -> &Publication {
        &self.publication
    }

    pub(crate) fn bounce_cache(&self) -> &BounceCache {
        &self.bounce_cache
    }

    /// Whether the testing knob `debug_skip_publication` is set.
    pub(crate) fn skip_publication(&self) -> bool {
        self.skip_publication.load(Relaxed)
    }
}

/// The policy from the C mount code's value (`enum untorn_writethrough`).
fn policy_from_c(value: i32) -> Option<WritethroughPolicy> {
    use crate::kernel_ext::bindings as ext;
    match value as u32 {
        ext::UNTORN_WRITETHROUGH_NONE => Some(WritethroughPolicy::None),
        ext::UNTORN_WRITETHROUGH_MARKED => Some(WritethroughPolicy::Marked),
        ext::UNTORN_WRITETHROUGH_ALL => Some(WritethroughPolicy::All),
        _ => None,
    }
}

fn policy_to_c(policy: WritethroughPolicy) -> u8 {
    use crate::kernel_ext::bindings as ext;
    (match policy {
        WritethroughPolicy::None => ext::UNTORN_WRITETHROUGH_NONE,
        WritethroughPolicy::Marked => ext::UNTORN_WRITETHROUGH_MARKED,
        WritethroughPolicy::All => ext::UNTORN_WRITETHROUGH_ALL,
    }) as u8
}

/// The state of a new mount of super block `sb` storing data in `backend`, with its debugfs
/// directory.
///
/// # Safety
///
/// `sb` is a new super block whose `s_dev` is set.
unsafe fn new_sb_data(
    sb: *mut bindings::super_block,
    writethrough: i32,
    backend: KBox<dyn Backend>,
) -> Result<UntornSb> {
    let policy = policy_from_c(writethrough).ok_or(EINVAL)?;
    // SAFETY: `s_dev` of a new anonymous super block is set by `get_tree_nodev`.
    let dev = unsafe { (*sb).s_dev };
    let name = CString::try_from_fmt(fmt!("{}:{}", dev >> 20, dev & 0xfffff))?;
    let dir = crate::debugfs_dir(&name);
    let counters = KBox::pin_init(
        dir.read_only_file(c"counters", Counters::default()),
        GFP_KERNEL,
    )?;
    let latency = KBox::pin_init(
        dir.read_only_file(c"wt_latency_us", Latency::new()),
        GFP_KERNEL,
    )?;
    let bounce_cache = KBox::pin_init(
        dir.read_only_file(c"bounce_cache", BounceCache::new()?),
        GFP_KERNEL,
    )?;
    let skip_publication = KBox::pin_init(
        dir.read_write_file(c"debug_skip_publication", Atomic::new(false)),
        GFP_KERNEL,
    )?;
    Ok(UntornSb {
        backend,
        policy: AtomicU8::new(policy_to_c(policy)),
        counters,
        latency,
        publication: Publication::new()?,
        bounce_cache,
        skip_publication,
        _debugfs_dir: dir,
    })
}

/// Fills a new super block over the lower directory `lower` (called by `untorn_mount.c`).
///
/// # Safety
///
/// `sb` is a new untorn super block being filled; `lower` is a referenced directory path.
#[no_mangle]
pub(crate) unsafe extern "C" fn untorn_fill_super(
    sb: *mut bindings::super_block,
    lower: *const bindings::path,
    writethrough: i32,
    _silent: bool,
) -> i32 {
    kernel::error::from_result(|| {
        let backend = KBox::new(LowerFileBackend, GFP_KERNEL)?;
        // SAFETY: Per our contract.
        let data = unsafe { new_sb_data(sb, writethrough, backend) }?;
        // SAFETY: Per our contract.
        unsafe { ops::fill_super::<Untorn>(sb, lower, UNTORN_SUPER_MAGIC, data) }?;
        Ok(0)
    })
}

/// Fills a new super block over the block device at `source` (called by `untorn_mount.c`):
/// raw mode. The device is opened exclusively (for writing unless the mount is read-only) and
/// shows as one regular file, [`RAW_FILE_NAME`], of the device's size, in a directory that is
/// a private tmpfs of its own, immutable.
///
/// # Safety
///
/// `sb` is a new untorn super block being filled; `source` is a NUL-terminated path.
#[no_mangle]
pub(crate) unsafe extern "C" fn untorn_fill_super_raw(
    sb: *mut bindings::super_block,
    source: *const c_char,
    writethrough: i32,
    _silent: bool,
) -> i32 {
    kernel::error::from_result(|| {
        // SAFETY: Per our contract.
        let (source, read_only) = unsafe {
            (
                CStr::from_char_ptr(source),
                (*sb).s_flags & crate::kernel_ext::bindings::UNTORN_SB_RDONLY != 0,
            )
        };
        // SAFETY: Per our contract `sb` is a live super block.
        let device = BlockDevice::open_exclusive(source, !read_only, unsafe { &*sb })?;
        let size = i64::try_from(device.size()).map_err(|_| EINVAL)?;
        let namespace = PrivateMount::tmpfs_with_one_file(RAW_FILE_NAME, size)?;
        let backend = KBox::new(DeviceBackend::new(device), GFP_KERNEL)?;
        // SAFETY: Per our contract.
        let data = unsafe { new_sb_data(sb, writethrough, backend) }?;
        // SAFETY: Per our contract. Writes end at the device's end.
        unsafe { ops::fill_super_over::<Untorn>(sb, namespace, UNTORN_SUPER_MAGIC, size, data) }?;
        Ok(0)
    })
}

const RDONLY: u32 = crate::kernel_ext::bindings::UNTORN_SB_RDONLY as u32;

/// Applies a remount's options (called by `untorn_mount.c`); `writethrough` is -1 if not given.
///
/// # Safety
///
/// `sb` is a mounted untorn super block.
#[no_mangle]
pub(crate) unsafe extern "C" fn untorn_reconfigure(
    sb: *mut bindings::super_block,
    writethrough: i32,
    sb_flags: u32,
    sb_flags_mask: u32,
) -> i32 {
    // SAFETY: Per our contract.
    let sb = unsafe { SuperBlock::<Untorn>::from_raw(sb) };
    let to_rw = sb_flags_mask & RDONLY != 0 && sb_flags & RDONLY == 0;
    if to_rw && (sb.lower_is_readonly() || !sb.info().data.backend().writable()) {
        return EROFS.to_errno();
    }
    if writethrough >= 0 {
        let Some(policy) = policy_from_c(writethrough) else {
            return EINVAL.to_errno();
        };
        sb.info()
            .data
            .policy
            .store(policy_to_c(policy), Ordering::Relaxed);
    }
    0
}

/// Unmounts: evicts every inode, then frees the mount's state (called by `untorn_mount.c`).
///
/// # Safety
///
/// `sb` is an untorn super block being destroyed.
#[no_mangle]
pub(crate) unsafe extern "C" fn untorn_kill_sb(sb: *mut bindings::super_block) {
    // SAFETY: Per our contract.
    unsafe { ops::kill_sb::<Untorn>(sb) };
}

/// `statfs`: storage's numbers (the lower filesystem's, or the device's), with our magic.
pub(crate) fn statfs(dentry: &Dentry<Untorn>, buf: &mut Statfs) -> Result {
    let backend = dentry.super_block().info().data.backend();
    backend.statfs(dentry, buf)?;
    buf.set_type(UNTORN_SUPER_MAGIC);
    Ok(())
}

/// The options shown in `/proc/mounts`.
pub(crate) fn show_options(sb: &SuperBlock<Untorn>, seq: &SeqFile) {
    seq_print!(seq, ",writethrough={}", sb.info().data.policy().as_str());
}

/// `syncfs`: the VFS has written back our folios to storage; make storage durable.
pub(crate) fn sync_fs(sb: &SuperBlock<Untorn>, wait: bool) -> Result {
    if !wait {
        return Ok(());
    }
    sb.info().data.backend().sync_fs(sb)
}
