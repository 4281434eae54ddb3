// SPDX-License-Identifier: GPL-2.0

//! A blk-mq disk served synchronously by a Rust driver, with the queue limits that the in-tree
//! `kernel::block::mq` abstractions cannot set: atomic write limits (`BLK_FEAT_ATOMIC_WRITES`),
//! and a volatile write cache with FUA (`BLK_FEAT_WRITE_CACHE | BLK_FEAT_FUA`) so that flushes
//! and FUA writes reach the driver.
//!
//! Every request is handed to [`Driver::queue_rq`] in the context that submits it and completed
//! when that returns: the tag set is `BLK_MQ_F_BLOCKING`, so the driver may sleep (take mutexes,
//! allocate) while it serves a request. This is the shape of a RAM disk; it is not meant for
//! hardware with interrupts.
//!
//! Used by `samples/rust/tornblk`, which includes this file (with [`super::bindings`]) by path.

use core::{
    marker::PhantomData,
    ptr::NonNull, //
};

use kernel::{
    alloc::flags::GFP_KERNEL,
    bindings,
    error::{
        code::EINVAL,
        from_err_ptr,
        to_result,
        Result, //
    },
    ffi::c_void,
    prelude::*,
    static_lock_class,
    sync::Arc,
    types::{
        Opaque,
        ScopeGuard, //
    },
};

use super::bindings as ext;

/// The largest logical block size a disk may have (the page size).
pub const MAX_LOGICAL_BLOCK_SIZE: u32 = bindings::PAGE_SIZE as u32;

pub use super::atomic_limits::AtomicLimits;

/// The shape of a disk.
#[derive(Clone, Copy, Debug)]
pub struct DiskConfig {
    /// The capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// The logical (and physical) block size: a power of two from 512 to the page size.
    pub logical_block_size: u32,
    /// The largest request, in 512-byte sectors (at least one logical block).
    pub max_hw_sectors: u32,
    /// A volatile write cache with FUA: the block layer sends flushes and FUA writes.
    pub write_cache: bool,
    /// Atomic write support, or none.
    pub atomic: Option<AtomicLimits>,
}

impl DiskConfig {
    fn validate(&self) -> Result {
        let lbs = self.logical_block_size;
        if !(512..=MAX_LOGICAL_BLOCK_SIZE).contains(&lbs) || !lbs.is_power_of_two() {
            return Err(EINVAL);
        }
        if u64::from(self.max_hw_sectors) * 512 < u64::from(lbs) {
            return Err(EINVAL);
        }
        if let Some(atomic) = &self.atomic {
            // Revalidate against this block size: the limits may have been made for another.
            AtomicLimits::new(
                lbs,
                atomic.unit_min(),
                atomic.unit_max(),
                atomic.max(),
                atomic.boundary(),
            )?;
        }
        Ok(())
    }
}

/// The operation of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `REQ_OP_READ`.
    Read,
    /// `REQ_OP_WRITE`.
    Write,
    /// `REQ_OP_FLUSH`: make every completed write durable.
    Flush,
    /// Any other operation (discard, write zeroes, zone operations, driver private).
    Other(u32),
}

/// A request being served by [`Driver::queue_rq`].
///
/// # Invariants
///
/// `rq` points to a started request that the driver owns (the block layer does not touch it)
/// for the lifetime `'a`, which ends before the request is completed.
pub struct Request<'a> {
    rq: NonNull<bindings::request>,
    _owned: PhantomData<&'a mut bindings::request>,
}

impl Request<'_> {
    fn flags(&self) -> bindings::blk_opf_t {
        // SAFETY: By the type invariants `rq` is valid and ours; `cmd_flags` does not change
        // while the driver owns the request.
        unsafe { (*self.rq.as_ptr()).cmd_flags }
    }

    /// The operation.
    pub fn op(&self) -> Op {
        let op = self.flags() & ext::UNTORN_REQ_OP_MASK;
        match op {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            other => Op::Other(other),
        }
    }

    /// Whether the request has `REQ_FUA`: its write must be durable when it completes.
    pub fn is_fua(&self) -> bool {
        self.flags() & ext::UNTORN_REQ_FUA != 0
    }

    /// Whether the request has `REQ_PREFLUSH`: a flush comes before its data.
    pub fn is_preflush(&self) -> bool {
        self.flags() & ext::UNTORN_REQ_PREFLUSH != 0
    }

    /// Whether the request has `REQ_ATOMIC`: its write must never be torn.
    pub fn is_atomic(&self) -> bool {
        self.flags() & ext::UNTORN_REQ_ATOMIC != 0
    }

    /// The first 512-byte sector (`blk_rq_pos()`).
    pub fn sector(&self) -> u64 {
        // SAFETY: By the type invariants `rq` is valid and ours.
        unsafe { (*self.rq.as_ptr()).__sector }
    }

    /// The number of bytes (`blk_rq_bytes()`).
    pub fn bytes(&self) -> u32 {
        // SAFETY: By the type invariants `rq` is valid and ours.
        unsafe { (*self.rq.as_ptr()).__data_len }
    }

    /// Copies the request's data (of a write) into `buf`, which must be [`Self::bytes`] long.
    pub fn copy_to(&self, buf: &mut [u8]) -> Result {
        if buf.len() != self.bytes() as usize {
            return Err(EINVAL);
        }
        // SAFETY: `rq` is valid and ours (type invariants), and `buf` is valid for writes of
        // `buf.len()` bytes; the helper writes at most that many.
        let copied = unsafe {
            ext::untorn_helper_rq_copy_to_buf(
                self.rq.as_ptr(),
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len(),
            )
        };
        if copied != buf.len() {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Copies `buf` into the request's pages (for a read); `buf` must be [`Self::bytes`] long.
    pub fn copy_from(&self, buf: &[u8]) -> Result {
        if buf.len() != self.bytes() as usize {
            return Err(EINVAL);
        }
        // SAFETY: `rq` is valid and ours (type invariants), and `buf` is valid for reads of
        // `buf.len()` bytes; the helper reads at most that many.
        let copied = unsafe {
            ext::untorn_helper_rq_copy_from_buf(
                self.rq.as_ptr(),
                buf.as_ptr().cast::<c_void>(),
                buf.len(),
            )
        };
        if copied != buf.len() {
            return Err(EINVAL);
        }
        Ok(())
    }
}

/// A driver that serves the requests of a [`Disk`].
pub trait Driver: Send + Sync + Sized + 'static {
    /// Serves `rq` and returns its status: the request completes with `Ok` as success and with
    /// an error as that error (e.g. `EIO`, `EOPNOTSUPP`). May sleep.
    fn queue_rq(&self, rq: &Request<'_>) -> Result;
}

/// Allocations in the scope of this guard do not start I/O to reclaim memory
/// (`memalloc_noio_save()`), as a block driver serving a request must.
///
/// # Invariants
///
/// `flags` is what `memalloc_noio_save()` returned; the guard is dropped by the task that made
/// it (it is not `Send`), and guards nest last-in first-out because they are scoped values.
pub struct NoIo {
    flags: u32,
    _not_send: PhantomData<*mut ()>,
}

impl NoIo {
    /// Enters a no-I/O allocation scope until the guard is dropped.
    pub fn enter() -> Self {
        // SAFETY: No preconditions; the matching restore is in `drop`.
        let flags = unsafe { ext::untorn_helper_memalloc_noio_save() };
        Self {
            flags,
            _not_send: PhantomData,
        }
    }
}

impl Drop for NoIo {
    fn drop(&mut self) {
        // SAFETY: By the type invariants this task saved `flags` and scopes nest.
        unsafe { ext::untorn_helper_memalloc_noio_restore(self.flags) };
    }
}

/// A block device (`struct gendisk`) added to the system, served by a [`Driver`].
///
/// # Invariants
///
/// - `tag_set` is an allocated tag set (`blk_mq_alloc_tag_set()` succeeded) whose operations
///   are [`Disk::OPS`], freed only in `drop`.
/// - `gendisk` came from `__blk_mq_alloc_disk()` over `tag_set` with `Arc::as_ptr(&_driver)` as
///   its queue data, and was added with `device_add_disk()`; `drop` deletes and puts it.
pub struct Disk<T: Driver> {
    gendisk: NonNull<bindings::gendisk>,
    tag_set: KBox<Opaque<bindings::blk_mq_tag_set>>,
    /// The queue data: kept alive until the disk is deleted.
    _driver: Arc<T>,
}

// SAFETY: The disk is a handle to kernel objects that any thread may delete, and an `Arc<T>` of
// a `Send + Sync` driver.
unsafe impl<T: Driver> Send for Disk<T> {}

// SAFETY: `&Disk` only reads the disk's name and invalidates its page cache, which the block
// layer synchronises.
unsafe impl<T: Driver> Sync for Disk<T> {}

impl<T: Driver> Disk<T> {
    /// The blk-mq operations: only `queue_rq`, which completes each request before returning.
    const OPS: bindings::blk_mq_ops = bindings::blk_mq_ops {
        queue_rq: Some(Self::queue_rq_callback),
        queue_rqs: None,
        commit_rqs: None,
        get_budget: None,
        put_budget: None,
        set_rq_budget_token: None,
        get_rq_budget_token: None,
        timeout: None,
        poll: None,
        complete: None,
        init_hctx: None,
        exit_hctx: None,
        init_request: None,
        exit_request: None,
        cleanup_rq: None,
        busy: None,
        map_queues: None,
        #[cfg(CONFIG_BLK_DEBUG_FS)]
        show_rq: None,
    };

    /// Makes a disk named `name` (at most 31 bytes) of shape `config`, served by `driver`, and
    /// adds it to the system: `/dev/<name>` appears before this returns.
    pub fn new(name: &CStr, config: &DiskConfig, driver: Arc<T>) -> Result<Self> {
        config.validate()?;
        let name = name.to_bytes();
        let tag_set = KBox::new(
            Opaque::new(bindings::blk_mq_tag_set {
                ops: &Self::OPS,
                nr_hw_queues: 1,
                nr_maps: 1,
                queue_depth: 64,
                numa_node: bindings::NUMA_NO_NODE,
                cmd_size: 0,
                flags: bindings::BLK_MQ_F_BLOCKING,
                ..pin_init::zeroed()
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: `tag_set` is a filled-in tag set at a stable (boxed) address.
        to_result(unsafe { bindings::blk_mq_alloc_tag_set(tag_set.get()) })?;
        let raw_tag_set = tag_set.get();
        let free_tag_set = ScopeGuard::new(move || {
            // SAFETY: The tag set was allocated above and no disk uses it on this error path;
            // the box holding it is dropped after this guard.
            unsafe { bindings::blk_mq_free_tag_set(raw_tag_set) }
        });

        let mut lim: bindings::queue_limits = pin_init::zeroed();
        lim.logical_block_size = config.logical_block_size;
        lim.physical_block_size = config.logical_block_size;
        lim.max_hw_sectors = config.max_hw_sectors;
        if config.write_cache {
            lim.features |= ext::UNTORN_BLK_FEAT_WRITE_CACHE | ext::UNTORN_BLK_FEAT_FUA;
        }
        if let Some(atomic) = &config.atomic {
            lim.features |= ext::UNTORN_BLK_FEAT_ATOMIC_WRITES;
            lim.atomic_write_hw_unit_min = atomic.unit_min();
            lim.atomic_write_hw_unit_max = atomic.unit_max();
            lim.atomic_write_hw_max = atomic.max();
            lim.atomic_write_hw_boundary = atomic.boundary();
        }

        let queuedata = Arc::as_ptr(&driver).cast_mut().cast::<c_void>();
        // SAFETY: `tag_set` is allocated, `lim` is a valid limits structure that the call only
        // reads and adjusts, and the lock class is static. `queuedata` stays valid as long as
        // the queue can call `queue_rq`: `driver` lives in the returned `Disk`, which deletes
        // the disk before dropping it.
        let gendisk = from_err_ptr(unsafe {
            bindings::__blk_mq_alloc_disk(
                tag_set.get(),
                &mut lim,
                queuedata,
                static_lock_class!().as_ptr(),
            )
        })?;
        let put = ScopeGuard::new(move || {
            // SAFETY: The disk was allocated above and not added on this error path.
            unsafe { bindings::put_disk(gendisk) }
        });

        // SAFETY: `gendisk` is valid and not yet visible to anybody else, so we may fill it in.
        let disk_name = unsafe { &mut (*gendisk).disk_name };
        if name.len() >= disk_name.len() || name.is_empty() {
            return Err(EINVAL);
        }
        for (dst, &src) in disk_name.iter_mut().zip(name.iter()) {
            *dst = kernel::ffi::c_char::from_ne_bytes([src]);
        }
        if let Some(nul) = disk_name.get_mut(name.len()) {
            *nul = 0;
        }
        // SAFETY: As above; the operations table is static and names this module as its owner,
        // so an open block device pins the module.
        unsafe { (*gendisk).fops = ext::untorn_helper_bdev_fops() };
        // SAFETY: `gendisk` is valid.
        unsafe { bindings::set_capacity(gendisk, config.capacity_sectors) };
        // SAFETY: `gendisk` is valid, filled in, and not added yet.
        to_result(unsafe {
            bindings::device_add_disk(core::ptr::null_mut(), gendisk, core::ptr::null_mut())
        })?;
        put.dismiss();
        free_tag_set.dismiss();

        // INVARIANT: The tag set is allocated with `OPS`, and the disk made over it with the
        // driver as queue data was added.
        Ok(Self {
            // SAFETY: `from_err_ptr` returned no error, so the pointer is not null.
            gendisk: unsafe { NonNull::new_unchecked(gendisk) },
            tag_set,
            _driver: driver,
        })
    }

    /// Drops the clean pages of the whole device's page cache (`invalidate_bdev()`), as a
    /// reboot would: after the device's content changed behind the page cache's back.
    pub fn invalidate_page_cache(&self) {
        // SAFETY: By the type invariants `gendisk` is a live, added disk, whose `part0` is set
        // for its whole life.
        unsafe { bindings::invalidate_bdev((*self.gendisk.as_ptr()).part0) };
    }

    /// Serves one request: starts it, hands it to the driver, and completes it.
    ///
    /// # Safety
    ///
    /// Called by blk-mq only, with `hctx` a live hardware context of a queue made by
    /// [`Disk::new`] and `bd` a queue entry whose request the driver now owns.
    unsafe extern "C" fn queue_rq_callback(
        hctx: *mut bindings::blk_mq_hw_ctx,
        bd: *const bindings::blk_mq_queue_data,
    ) -> bindings::blk_status_t {
        // SAFETY: `bd` is valid for the call (function safety requirements).
        let Some(rq) = NonNull::new(unsafe { (*bd).rq }) else {
            // SAFETY: No preconditions: it maps any errno to a status.
            return unsafe { bindings::errno_to_blk_status(EINVAL.to_errno()) };
        };
        // SAFETY: `hctx` is live, and its queue's data is the driver that `Disk::new` set,
        // which outlives the queue's use (type invariants of `Disk`).
        let driver = unsafe { &*(*(*hctx).queue).queuedata.cast::<T>() };
        // SAFETY: The request is ours to start (function safety requirements).
        unsafe { bindings::blk_mq_start_request(rq.as_ptr()) };
        // INVARIANT: The request is started and ours until it is ended below.
        let request = Request {
            rq,
            _owned: PhantomData,
        };
        let result = driver.queue_rq(&request);
        let status = match result {
            Ok(()) => bindings::BLK_STS_OK as bindings::blk_status_t,
            // SAFETY: No preconditions: it maps any errno to a status.
            Err(e) => unsafe { bindings::errno_to_blk_status(e.to_errno()) },
        };
        // SAFETY: The request is started and ours, and nothing refers to it any more.
        unsafe { bindings::blk_mq_end_request(rq.as_ptr(), status) };
        bindings::BLK_STS_OK as bindings::blk_status_t
    }
}

impl<T: Driver> Drop for Disk<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the disk was added; `del_gendisk()` waits for the
        // requests in flight and lets no new one reach the driver.
        unsafe { bindings::del_gendisk(self.gendisk.as_ptr()) };
        // SAFETY: This drops the reference that `__blk_mq_alloc_disk()` gave us.
        unsafe { bindings::put_disk(self.gendisk.as_ptr()) };
        // SAFETY: The tag set was allocated (type invariants), and its disk is deleted.
        unsafe { bindings::blk_mq_free_tag_set(self.tag_set.get()) };
    }
}
