// SPDX-License-Identifier: GPL-2.0

//! The device: its durable content, its volatile write cache, its power state, and what a power
//! cut does to them (with the crash model of `lib/untorn_logic`).
//!
//! Memory: the durable content is kept in 4 KiB chunks allocated when first written (a device
//! that was never written costs only its chunk index: 8 bytes per 4 KiB); the volatile cache is
//! the list of writes completed since the last flush with a copy of their data, at most
//! `cache_mib` MiB and [`MAX_PENDING_WRITES`] writes. A write that does not fit destages the
//! whole cache first, as if a flush had come (counted as an implicit flush): a real disk's cache
//! is bounded too, and writing back early is always allowed.
//!
//! Reads see the durable content with the cached writes laid over it in completion order, so
//! they always see the newest data.

use kernel::{
    alloc::{
        flags::GFP_KERNEL,
        KBox,
        KVVec,
        KVec, //
    },
    error::code::{
        EINVAL,
        EIO,
        ENODEV,
        EOPNOTSUPP, //
    },
    new_mutex,
    prelude::*,
    sync::Mutex,
};

use crate::{
    kernel_ext::block::{
        Driver,
        NoIo,
        Op,
        Request, //
    },
    untorn_logic::{
        crash_model::{
            AfterWrite,
            CrashPolicy,
            CrashReport,
            Planner,
            PowerError,
            PowerState,
            WriteMeta, //
        },
        tornblk::{
            self,
            Command,
            MAX_PENDING_WRITES,
            MAX_REQUEST_BYTES, //
        },
    },
};

/// The unit of tearing, and of addressing.
const SECTOR: usize = 512;
/// The unit of allocation of the durable content.
const CHUNK: usize = 4096;
/// Sectors per chunk.
const CHUNK_SECTORS: u64 = (CHUNK / SECTOR) as u64;

/// The error of a power command or of I/O in the wrong power state.
fn power_error(e: PowerError) -> Error {
    Error::from_errno(-e.errno())
}

/// The durable content: what a reader sees after a flush, and what survives a cut.
///
/// # Invariants
///
/// `chunks` has one slot per 4 KiB of the device.
struct Store {
    chunks: KVVec<Option<KBox<[u8; CHUNK]>>>,
}

impl Store {
    /// An all-zero device of `sectors` sectors, with no chunk allocated.
    fn new(sectors: u64) -> Result<Self> {
        let n = usize::try_from(sectors.div_ceil(CHUNK_SECTORS)).map_err(|_| EINVAL)?;
        let mut chunks = KVVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            chunks.push(None, GFP_KERNEL)?;
        }
        Ok(Self { chunks })
    }

    /// Allocates the chunks of sectors `first..first + count`, so that writing them back later
    /// (at a flush or a cut) cannot fail.
    fn reserve(&mut self, first: u64, count: u64) -> Result {
        if count == 0 {
            return Ok(());
        }
        let last = first.checked_add(count - 1).ok_or(EINVAL)?;
        for c in first / CHUNK_SECTORS..=last / CHUNK_SECTORS {
            let slot = usize::try_from(c)
                .ok()
                .and_then(|c| self.chunks.get_mut(c))
                .ok_or(EINVAL)?;
            if slot.is_none() {
                *slot = Some(KBox::init(pin_init::init_zeroed(), GFP_KERNEL)?);
            }
        }
        Ok(())
    }

    /// The chunk of `sector` and the offset of the sector in it.
    fn locate(sector: u64) -> (usize, usize) {
        let chunk = usize::try_from(sector / CHUNK_SECTORS).unwrap_or(usize::MAX);
        let offset = (sector % CHUNK_SECTORS) as usize * SECTOR;
        (chunk, offset)
    }

    /// Copies sector `sector` into `dst` (512 bytes); zeroes if it was never written.
    fn read_sector(&self, sector: u64, dst: &mut [u8]) {
        let (chunk, offset) = Self::locate(sector);
        match self
            .chunks
            .get(chunk)
            .and_then(|c| c.as_ref())
            .and_then(|c| c.get(offset..offset + SECTOR))
        {
            Some(src) => dst.copy_from_slice(src),
            None => dst.fill(0),
        }
    }

    /// Writes `src` (512 bytes) to sector `sector`, whose chunk [`Self::reserve`] allocated.
    fn write_sector(&mut self, sector: u64, src: &[u8]) {
        let (chunk, offset) = Self::locate(sector);
        if let Some(dst) = self
            .chunks
            .get_mut(chunk)
            .and_then(|c| c.as_mut())
            .and_then(|c| c.get_mut(offset..offset + SECTOR))
        {
            dst.copy_from_slice(src);
        }
    }

    /// Writes `data` (whole sectors) from sector `first` on.
    fn write(&mut self, first: u64, data: &[u8]) {
        for (k, src) in data.chunks_exact(SECTOR).enumerate() {
            self.write_sector(first + k as u64, src);
        }
    }
}

/// What the last cut did.
#[derive(Clone, Copy, Default)]
pub(crate) struct LastCut {
    /// The seed it was drawn from.
    pub(crate) seed: u64,
    /// Writes in the volatile cache when it happened, FUA writes included.
    pub(crate) pending: u64,
    /// FUA writes among them (durable, so not the cut's to decide).
    pub(crate) durable: u64,
    /// Kept, lost and torn writes and torn sectors.
    pub(crate) report: CrashReport,
}

/// Counters since the device was enabled.
#[derive(Clone, Copy, Default)]
pub(crate) struct Stats {
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) atomic_writes: u64,
    pub(crate) fua_writes: u64,
    pub(crate) flushes: u64,
    pub(crate) implicit_flushes: u64,
    pub(crate) cuts: u64,
}

/// The running part of a device: only while it is enabled.
struct Media {
    store: Store,
    sectors: u64,
    cache_bytes: u64,
    /// The volatile cache: the writes completed since the last flush, in completion order...
    metas: KVec<WriteMeta>,
    /// ... and their data, one buffer per write.
    datas: KVec<KVVec<u8>>,
    pending_bytes: u64,
    /// Order keys for a cut with reordering, one per cached write.
    keys: KVec<u64>,
    /// A read's data, assembled before it is copied to the request.
    scratch: KVVec<u8>,
}

impl Media {
    fn new(sectors: u64, cache_bytes: u64) -> Result<Self> {
        Ok(Self {
            store: Store::new(sectors)?,
            sectors,
            cache_bytes,
            metas: KVec::with_capacity(MAX_PENDING_WRITES, GFP_KERNEL)?,
            datas: KVec::with_capacity(MAX_PENDING_WRITES, GFP_KERNEL)?,
            pending_bytes: 0,
            keys: KVec::with_capacity(MAX_PENDING_WRITES, GFP_KERNEL)?,
            scratch: KVVec::from_elem(0u8, MAX_REQUEST_BYTES as usize, GFP_KERNEL)?,
        })
    }

    /// Checks that `bytes` bytes from `sector` are whole sectors on the device; returns the
    /// number of sectors.
    fn check_range(&self, sector: u64, bytes: usize) -> Result<u64> {
        if bytes == 0 || bytes % SECTOR != 0 {
            return Err(EINVAL);
        }
        let count = (bytes / SECTOR) as u64;
        match sector.checked_add(count) {
            Some(end) if end <= self.sectors => Ok(count),
            _ => Err(EIO),
        }
    }

    /// Writes every cached write back to the durable content in completion order, and empties
    /// the cache.
    fn destage(&mut self) {
        for (meta, data) in self.metas.iter().zip(self.datas.iter()) {
            self.store.write(meta.first_sector(), data);
        }
        self.metas.clear();
        self.datas.clear();
        self.pending_bytes = 0;
    }

    /// Applies the cut drawn by `planner` to the durable content, and empties the cache.
    fn crash(&mut self, planner: &Planner) -> Result<LastCut> {
        let policy = planner.policy();
        if policy.reorder() {
            self.keys.clear();
            self.keys.resize(self.metas.len(), 0, GFP_KERNEL)?;
            planner
                .order_keys(&self.metas, &mut self.keys)
                .map_err(|_| EINVAL)?;
            // Each sector shows its winner: apply every write's sectors that it wins.
            for (i, (meta, data)) in self.metas.iter().zip(self.datas.iter()).enumerate() {
                for (k, src) in data.chunks_exact(SECTOR).enumerate() {
                    let sector = meta.first_sector() + k as u64;
                    let winner = planner
                        .sector_winner(sector, &self.metas, &self.keys)
                        .map_err(|_| EINVAL)?;
                    if winner == Some(i) {
                        self.store.write_sector(sector, src);
                    }
                }
            }
        } else {
            // Without reordering, kept sectors land in completion order (the same image as
            // asking `sector_winner()` for every sector, in time proportional to the sectors).
            for (i, (meta, data)) in self.metas.iter().zip(self.datas.iter()).enumerate() {
                for (k, src) in data.chunks_exact(SECTOR).enumerate() {
                    if planner.sector_kept(i, meta, k as u32) {
                        self.store.write_sector(meta.first_sector() + k as u64, src);
                    }
                }
            }
        }
        let cut = LastCut {
            seed: planner.seed(),
            pending: self.metas.len() as u64,
            durable: self.metas.iter().filter(|m| m.fua()).count() as u64,
            report: planner.report(&self.metas),
        };
        self.metas.clear();
        self.datas.clear();
        self.pending_bytes = 0;
        Ok(cut)
    }

    /// Serves a read: the durable content with the cached writes laid over it.
    fn read(&mut self, rq: &Request<'_>) -> Result {
        let bytes = rq.bytes() as usize;
        let first = rq.sector();
        let count = self.check_range(first, bytes)?;
        let buf = self.scratch.get_mut(..bytes).ok_or(EINVAL)?;
        for (k, dst) in buf.chunks_exact_mut(SECTOR).enumerate() {
            self.store.read_sector(first + k as u64, dst);
        }
        let end = first + count;
        for (meta, data) in self.metas.iter().zip(self.datas.iter()) {
            let from = meta.first_sector().max(first);
            let to = meta.end_sector().min(end);
            if from >= to {
                continue;
            }
            let src_at = (from - meta.first_sector()) as usize * SECTOR;
            let dst_at = (from - first) as usize * SECTOR;
            let len = (to - from) as usize * SECTOR;
            if let (Some(dst), Some(src)) = (
                buf.get_mut(dst_at..dst_at + len),
                data.get(src_at..src_at + len),
            ) {
                dst.copy_from_slice(src);
            }
        }
        rq.copy_from(buf)
    }
}

/// The state of a device, under its lock.
struct State {
    policy: CrashPolicy,
    seed: u64,
    /// Cuts since the seed was last set: cut `n` draws from `cut_seed(seed, n)`.
    cuts_since_seed: u64,
    power: PowerState,
    media: Option<Media>,
    stats: Stats,
    last_cut: Option<LastCut>,
}

impl State {
    /// Cuts the power (already switched off in `power`): builds the crash image.
    fn crash(&mut self) -> Result {
        let media = self.media.as_mut().ok_or(ENODEV)?;
        let seed = tornblk::cut_seed(self.seed, self.cuts_since_seed);
        self.cuts_since_seed = self.cuts_since_seed.wrapping_add(1);
        let cut = media.crash(&Planner::new(seed, self.policy))?;
        self.last_cut = Some(cut);
        self.stats.cuts += 1;
        Ok(())
    }

    /// Makes everything completed durable.
    fn flush(&mut self) -> Result {
        self.power.admit_io().map_err(power_error)?;
        let media = self.media.as_mut().ok_or(EIO)?;
        media.destage();
        self.stats.flushes += 1;
        Ok(())
    }

    /// Takes a completed write into the volatile cache.
    fn write(&mut self, rq: &Request<'_>, data: KVVec<u8>) -> Result {
        self.power.admit_io().map_err(power_error)?;
        if rq.is_preflush() {
            self.flush()?;
        }
        let media = self.media.as_mut().ok_or(EIO)?;
        let first = rq.sector();
        let count = media.check_range(first, data.len())?;
        let meta = WriteMeta::new(
            first,
            u32::try_from(count).map_err(|_| EINVAL)?,
            rq.is_atomic(),
            rq.is_fua(),
        )
        .map_err(|_| EINVAL)?;
        media.store.reserve(first, count)?;
        let bytes = data.len() as u64;
        if tornblk::must_destage(
            media.metas.len(),
            media.pending_bytes,
            bytes,
            media.cache_bytes,
        ) {
            media.destage();
            self.stats.implicit_flushes += 1;
        }
        // Both have room for `MAX_PENDING_WRITES`, which `must_destage` keeps us below.
        media.datas.push(data, GFP_KERNEL)?;
        if let Err(e) = media.metas.push(meta, GFP_KERNEL) {
            media.datas.pop();
            return Err(e.into());
        }
        media.pending_bytes += bytes;
        self.stats.writes += 1;
        if meta.atomic() {
            self.stats.atomic_writes += 1;
        }
        if meta.fua() {
            self.stats.fua_writes += 1;
        }
        if self.power.write_completed().map_err(power_error)? == AfterWrite::Cut {
            self.crash()?;
        }
        Ok(())
    }
}

/// A tornblk device: the driver of its disk, and the target of its commands.
#[pin_data]
pub(crate) struct Device {
    #[pin]
    state: Mutex<State>,
}

/// A snapshot of what the device reports.
pub(crate) struct Snapshot {
    pub(crate) enabled: bool,
    pub(crate) power: PowerState,
    pub(crate) seed: u64,
    pub(crate) stats: Stats,
    pub(crate) last_cut: Option<LastCut>,
    pub(crate) pending_writes: u64,
    pub(crate) pending_bytes: u64,
}

impl Device {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            state <- new_mutex!(State {
                policy: CrashPolicy::DEFAULT,
                seed: 0,
                cuts_since_seed: 0,
                power: PowerState::Running,
                media: None,
                stats: Stats::default(),
                last_cut: None,
            }),
        })
    }

    /// Gives the device empty media of `sectors` sectors and a cache of `cache_bytes`, powered
    /// on, with fresh counters.
    pub(crate) fn start(&self, sectors: u64, cache_bytes: u64) -> Result {
        let media = Media::new(sectors, cache_bytes)?;
        let mut state = self.state.lock();
        state.media = Some(media);
        state.power = PowerState::Running;
        state.stats = Stats::default();
        state.last_cut = None;
        Ok(())
    }

    /// Frees the media (the disk is gone).
    pub(crate) fn stop(&self) {
        let media = self.state.lock().media.take();
        drop(media);
    }

    /// Runs a power command.
    pub(crate) fn command(&self, command: Command) -> Result {
        let mut state = self.state.lock();
        if state.media.is_none() {
            return Err(ENODEV);
        }
        match command {
            Command::Cut => {
                state.power.cut_now().map_err(power_error)?;
                state.crash()
            }
            Command::CutAfter(n) => state.power.arm(n).map_err(power_error),
            Command::CutRandom(max) => {
                let seed = tornblk::cut_seed(state.seed, state.cuts_since_seed);
                state
                    .power
                    .arm_random(seed, max)
                    .map(drop)
                    .map_err(power_error)
            }
            Command::Disarm => state.power.disarm().map_err(power_error),
            Command::PowerOn => state.power.power_on().map_err(power_error),
        }
    }

    /// The crash policy.
    pub(crate) fn policy(&self) -> CrashPolicy {
        self.state.lock().policy
    }

    /// Changes the crash policy (for the next cut) with `change`, which checks the new one.
    pub(crate) fn set_policy(
        &self,
        change: impl FnOnce(CrashPolicy) -> Result<CrashPolicy>,
    ) -> Result {
        let mut state = self.state.lock();
        state.policy = change(state.policy)?;
        Ok(())
    }

    /// Sets the seed, and restarts the count of cuts drawn from it.
    pub(crate) fn set_seed(&self, seed: u64) {
        let mut state = self.state.lock();
        state.seed = seed;
        state.cuts_since_seed = 0;
    }

    /// What the device reports.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.state.lock();
        let (pending_writes, pending_bytes) = match &state.media {
            Some(m) => (m.metas.len() as u64, m.pending_bytes),
            None => (0, 0),
        };
        Snapshot {
            enabled: state.media.is_some(),
            power: state.power,
            seed: state.seed,
            stats: state.stats,
            last_cut: state.last_cut,
            pending_writes,
            pending_bytes,
        }
    }
}

impl Driver for Device {
    fn queue_rq(&self, rq: &Request<'_>) -> Result {
        // Allocations here must not recurse into I/O, possibly to this very device.
        let _noio = NoIo::enter();
        match rq.op() {
            Op::Read => {
                let mut state = self.state.lock();
                state.power.admit_io().map_err(power_error)?;
                state.stats.reads += 1;
                state.media.as_mut().ok_or(EIO)?.read(rq)
            }
            Op::Write => {
                // Copy the data before taking the lock: the cache keeps it.
                let bytes = rq.bytes() as usize;
                if bytes == 0 || bytes > MAX_REQUEST_BYTES as usize {
                    return Err(EINVAL);
                }
                let mut data = KVVec::from_elem(0u8, bytes, GFP_KERNEL)?;
                rq.copy_to(&mut data)?;
                self.state.lock().write(rq, data)
            }
            Op::Flush => self.state.lock().flush(),
            Op::Other(_) => Err(EOPNOTSUPP),
        }
    }
}
