// SPDX-License-Identifier: GPL-2.0

//! The crash model of `tornblk`, a RAM block device that simulates power cuts.
//!
//! The device models a disk with a volatile write cache. Writes complete into the cache; a flush
//! (`REQ_PREFLUSH`) makes every write completed before it durable; `REQ_FUA` makes its own write
//! durable on completion. When the power is cut, the device builds the image a real disk could
//! show once power returns. `Documentation/block/tornblk-crash-model.rst` states the model in
//! full; in brief, for the writes completed since the last flush (the *pending list*):
//!
//! - A FUA write is durable: it is always present, and no write completed before it shows through
//!   it on its sectors.
//! - Every other write is kept, lost, or (unless it is `REQ_ATOMIC`) torn: an arbitrary subset of
//!   its sectors is kept. A `REQ_ATOMIC` write is all or nothing.
//! - Without reordering, the kept sectors land in completion order. With reordering, each sector
//!   of a plain write may land at any time, and each `REQ_ATOMIC` write lands as one unit at any
//!   time, except that on the sectors of a FUA write, what completed before it lands before it
//!   and what completed after it lands after it.
//!
//! This file is pure, deterministic, `no_std` logic without allocation. The device owns its
//! storage and asks [`Planner`] what to do, one write or one sector at a time; [`check_image`]
//! decides whether an image is one the model allows, for the host tests and the crash campaign.

pub use super::errno::{EBUSY, EINVAL, EIO};
use super::rng::{self, SplitMix64};

/// The largest outcome weight of a [`CrashPolicy`].
pub const MAX_WEIGHT: u16 = 1000;

/// The largest write count a power cut can be armed for.
pub const MAX_WRITES_BEFORE_CUT: u64 = 1 << 32;

/// Hash domain of the kept, lost or torn draw of a write.
const TAG_FATE: u64 = 1;
/// Hash domain of the coin that settles a tear drawn by a `REQ_ATOMIC` write.
const TAG_ATOMIC_COIN: u64 = 2;
/// Hash domain of the per-sector decisions of a torn write.
const TAG_SECTOR: u64 = 3;
/// Hash domain of the order of the writes that land as one unit.
const TAG_ORDER: u64 = 4;
/// Hash domain of the order of the sectors of plain writes.
const TAG_SECTOR_ORDER: u64 = 5;

/// A bad parameter: a malformed write record, policy or buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamError {
    /// A write of no sectors.
    EmptyWrite,
    /// A write that runs past the last addressable sector.
    SectorOverflow,
    /// A policy weight above [`MAX_WEIGHT`].
    WeightTooLarge,
    /// A policy whose weights are all zero.
    NoOutcome,
    /// An order key buffer whose length is not the number of writes.
    KeysLength,
}

impl ParamError {
    /// The positive errno for this error.
    pub const fn errno(self) -> i32 {
        EINVAL
    }
}

/// What the device records for each completed write, in completion order; the data stays in the
/// device.
///
/// # Invariants
///
/// At least one sector, and `first_sector + sectors` does not overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WriteMeta {
    first_sector: u64,
    sectors: u32,
    atomic: bool,
    fua: bool,
}

impl WriteMeta {
    /// Returns the record of a write of `sectors` 512-byte sectors at `first_sector`, with
    /// `REQ_ATOMIC` (`atomic`) and `REQ_FUA` (`fua`) as the bio had them.
    pub const fn new(
        first_sector: u64,
        sectors: u32,
        atomic: bool,
        fua: bool,
    ) -> Result<Self, ParamError> {
        if sectors == 0 {
            return Err(ParamError::EmptyWrite);
        }
        if first_sector.checked_add(sectors as u64).is_none() {
            return Err(ParamError::SectorOverflow);
        }
        Ok(Self {
            first_sector,
            sectors,
            atomic,
            fua,
        })
    }

    /// The first sector written.
    pub const fn first_sector(&self) -> u64 {
        self.first_sector
    }

    /// The number of sectors written (at least one).
    pub const fn sectors(&self) -> u32 {
        self.sectors
    }

    /// The sector after the last one written.
    pub const fn end_sector(&self) -> u64 {
        // Cannot overflow: `new` checked it.
        self.first_sector.saturating_add(self.sectors as u64)
    }

    /// Whether the bio had `REQ_ATOMIC`.
    pub const fn atomic(&self) -> bool {
        self.atomic
    }

    /// Whether the bio had `REQ_FUA`.
    pub const fn fua(&self) -> bool {
        self.fua
    }

    /// Whether the write covers `sector`.
    pub const fn covers(&self, sector: u64) -> bool {
        sector >= self.first_sector && sector < self.end_sector()
    }

    /// Whether the two writes share a sector.
    pub const fn overlaps(&self, other: &Self) -> bool {
        self.first_sector < other.end_sector() && other.first_sector < self.end_sector()
    }

    /// The index of `sector` within the write, if the write covers it.
    pub const fn sector_index(&self, sector: u64) -> Option<u32> {
        if self.covers(sector) {
            // Below `sectors`, so it fits.
            Some((sector - self.first_sector) as u32)
        } else {
            None
        }
    }
}

/// How a power cut treats the writes it finds in the volatile cache.
///
/// The three weights set the odds of each outcome for a non-FUA pending write: a write is kept
/// with probability `keep / (keep + lose + tear)`, and so on. They shape which images the planner
/// draws, never which images the model allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashPolicy {
    keep: u16,
    lose: u16,
    tear: u16,
    reorder: bool,
    atomic_as_plain: bool,
}

impl CrashPolicy {
    /// Even odds of keeping, losing and tearing, in completion order, `REQ_ATOMIC` honoured.
    pub const DEFAULT: Self = Self {
        keep: 1,
        lose: 1,
        tear: 1,
        reorder: false,
        atomic_as_plain: false,
    };

    /// Returns the policy with these outcome weights, each at most [`MAX_WEIGHT`] and not all
    /// zero, without reordering and with `REQ_ATOMIC` honoured.
    pub const fn new(keep: u16, lose: u16, tear: u16) -> Result<Self, ParamError> {
        if keep > MAX_WEIGHT || lose > MAX_WEIGHT || tear > MAX_WEIGHT {
            return Err(ParamError::WeightTooLarge);
        }
        if keep == 0 && lose == 0 && tear == 0 {
            return Err(ParamError::NoOutcome);
        }
        Ok(Self {
            keep,
            lose,
            tear,
            reorder: false,
            atomic_as_plain: false,
        })
    }

    /// Returns the policy with reordering between pending writes allowed or not.
    pub const fn with_reorder(mut self, reorder: bool) -> Self {
        self.reorder = reorder;
        self
    }

    /// Returns the policy with `REQ_ATOMIC` writes treated as plain writes (so that they can
    /// tear) or not: a negative control, to show that a test notices torn atomic writes.
    pub const fn with_atomic_as_plain(mut self, atomic_as_plain: bool) -> Self {
        self.atomic_as_plain = atomic_as_plain;
        self
    }

    /// The weight of keeping a write.
    pub const fn keep(&self) -> u16 {
        self.keep
    }

    /// The weight of losing a write.
    pub const fn lose(&self) -> u16 {
        self.lose
    }

    /// The weight of tearing a write.
    pub const fn tear(&self) -> u16 {
        self.tear
    }

    /// Whether pending writes may land in another order than they completed.
    pub const fn reorder(&self) -> bool {
        self.reorder
    }

    /// Whether `REQ_ATOMIC` writes are treated as plain writes.
    pub const fn atomic_as_plain(&self) -> bool {
        self.atomic_as_plain
    }

    /// Whether the model treats `write` as all or nothing: `REQ_ATOMIC` and not disowned by
    /// [`Self::atomic_as_plain`].
    pub const fn is_atomic(&self, write: &WriteMeta) -> bool {
        write.atomic && !self.atomic_as_plain
    }

    /// The sum of the weights (not zero, by construction).
    const fn total(&self) -> u32 {
        self.keep as u32 + self.lose as u32 + self.tear as u32
    }
}

impl Default for CrashPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a power cut did to one write of the pending list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// A FUA write: durable on completion, so the cut had no say.
    Durable,
    /// Every sector kept.
    Kept,
    /// Every sector lost.
    Lost,
    /// Some sectors kept and some lost: `0 < sectors_kept < sectors`.
    Torn {
        /// The number of sectors kept.
        sectors_kept: u32,
    },
}

/// The raw outcome drawn for a write, before a tear is resolved sector by sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Draw {
    Durable,
    Kept,
    Lost,
    Tear,
}

/// What a power cut did, summed over the non-FUA writes of the pending list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Writes kept whole.
    pub writes_kept: u64,
    /// Writes lost whole.
    pub writes_lost: u64,
    /// Writes torn: some sectors kept, some lost.
    pub writes_torn: u64,
    /// Sectors lost from torn writes.
    pub sectors_torn: u64,
}

impl CrashReport {
    /// An empty report.
    pub const fn new() -> Self {
        Self {
            writes_kept: 0,
            writes_lost: 0,
            writes_torn: 0,
            sectors_torn: 0,
        }
    }

    /// Adds the fate of a write of `sectors` sectors; durable writes are not counted.
    pub fn record(&mut self, fate: Fate, sectors: u32) {
        match fate {
            Fate::Durable => {}
            Fate::Kept => self.writes_kept = self.writes_kept.saturating_add(1),
            Fate::Lost => self.writes_lost = self.writes_lost.saturating_add(1),
            Fate::Torn { sectors_kept } => {
                self.writes_torn = self.writes_torn.saturating_add(1);
                let lost = sectors.saturating_sub(sectors_kept);
                self.sectors_torn = self.sectors_torn.saturating_add(u64::from(lost));
            }
        }
    }
}

/// Decides, from a seed and a policy, what a power cut does to the pending list: the writes
/// completed since the last flush, FUA writes included, indexed from 0 in completion order.
///
/// Every decision is a pure function of the seed, the policy, the write's index and record, and
/// (for sectors) the sector, so the device may ask in any order, as often as it likes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planner {
    seed: u64,
    policy: CrashPolicy,
}

impl Planner {
    /// Returns the planner of the cut drawn from `seed` under `policy`.
    pub const fn new(seed: u64, policy: CrashPolicy) -> Self {
        Self { seed, policy }
    }

    /// The seed.
    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// The policy.
    pub const fn policy(&self) -> &CrashPolicy {
        &self.policy
    }

    /// Draws the outcome of write `index`; a tear drawn by an all-or-nothing write is settled by
    /// a fair coin into kept or lost, so that the draws of the other writes do not change.
    fn draw(&self, index: usize, write: &WriteMeta) -> Draw {
        if write.fua {
            return Draw::Durable;
        }
        let index = index as u64;
        let r = rng::scale(
            rng::hash(self.seed, TAG_FATE, index, 0),
            self.policy.total(),
        );
        let keep = u32::from(self.policy.keep);
        let lose = u32::from(self.policy.lose);
        if r < keep {
            Draw::Kept
        } else if r < keep + lose {
            Draw::Lost
        } else if !self.policy.is_atomic(write) {
            Draw::Tear
        } else if rng::hash(self.seed, TAG_ATOMIC_COIN, index, 0) & 1 == 1 {
            Draw::Kept
        } else {
            Draw::Lost
        }
    }

    /// Whether the cut keeps sector `sector_index` (counted from the write's first sector) of
    /// write `index`: always for a durable or kept write, never for a lost one, and a fair coin
    /// per sector for a torn one. False for a sector the write does not have.
    pub fn sector_kept(&self, index: usize, write: &WriteMeta, sector_index: u32) -> bool {
        if sector_index >= write.sectors {
            return false;
        }
        match self.draw(index, write) {
            Draw::Durable | Draw::Kept => true,
            Draw::Lost => false,
            Draw::Tear => {
                let h = rng::hash(self.seed, TAG_SECTOR, index as u64, u64::from(sector_index));
                h & 1 == 1
            }
        }
    }

    /// The fate of write `index`, as [`Self::sector_kept`] decides its sectors: a drawn tear that
    /// happens to keep every sector (or none) is reported as kept (or lost).
    ///
    /// This takes time proportional to the write's size for a torn write.
    pub fn fate(&self, index: usize, write: &WriteMeta) -> Fate {
        match self.draw(index, write) {
            Draw::Durable => Fate::Durable,
            Draw::Kept => Fate::Kept,
            Draw::Lost => Fate::Lost,
            Draw::Tear => {
                let mut sectors_kept = 0u32;
                for i in 0..write.sectors {
                    if self.sector_kept(index, write, i) {
                        sectors_kept += 1;
                    }
                }
                if sectors_kept == 0 {
                    Fate::Lost
                } else if sectors_kept == write.sectors {
                    Fate::Kept
                } else {
                    Fate::Torn { sectors_kept }
                }
            }
        }
    }

    /// Whether write `index` lands as one unit: a durable write, or a kept all-or-nothing write.
    fn is_unit(&self, index: usize, write: &WriteMeta) -> bool {
        match self.draw(index, write) {
            Draw::Durable => true,
            Draw::Kept => self.policy.is_atomic(write),
            Draw::Lost | Draw::Tear => false,
        }
    }

    /// Fills `keys` (one per write of `writes`, the pending list) with the order in which the
    /// writes that land as one unit land when reordering is on: a random order in which each
    /// durable write comes after every unit completed before it that shares a sector with it, and
    /// before every unit completed after it that shares a sector with it. Other writes get 0.
    ///
    /// [`Self::sector_winner`] needs these keys when reordering is on. This takes time
    /// proportional to the square of the number of writes.
    pub fn order_keys(&self, writes: &[WriteMeta], keys: &mut [u64]) -> Result<(), ParamError> {
        if keys.len() != writes.len() {
            return Err(ParamError::KeysLength);
        }
        for (i, write) in writes.iter().enumerate() {
            let mut key = 0;
            if self.is_unit(i, write) {
                // Below 2^62, so the chain of `+ 1`s below cannot reach the top in practice;
                // ties, should it saturate, go to the later write.
                key = rng::hash(self.seed, TAG_ORDER, i as u64, 0) >> 2;
                for (j, (earlier, &earlier_key)) in
                    writes.iter().zip(keys.iter()).take(i).enumerate()
                {
                    if (write.fua || earlier.fua)
                        && write.overlaps(earlier)
                        && self.is_unit(j, earlier)
                    {
                        key = key.max(earlier_key.saturating_add(1));
                    }
                }
            }
            if let Some(slot) = keys.get_mut(i) {
                *slot = key;
            }
        }
        Ok(())
    }

    /// The write of `writes` (the pending list) whose data `sector` shows after the cut, or
    /// `None` if it shows the durable data of the last flush.
    ///
    /// The *base* of the sector is the last FUA write covering it (or the durable data if there
    /// is none); its *contenders* are the non-FUA writes completed after the base that cover it
    /// and whose sector the cut keeps. Without reordering the last contender wins; with
    /// reordering the contender with the largest order key wins, where an all-or-nothing write
    /// uses its key from [`Self::order_keys`] (so it wins or loses as one unit) and a plain write
    /// a random key of its own for each sector. With no contender, the base shows.
    ///
    /// `keys` must be what [`Self::order_keys`] filled when reordering is on, and is not read
    /// otherwise (an empty slice will do). This takes time proportional to the number of writes.
    pub fn sector_winner(
        &self,
        sector: u64,
        writes: &[WriteMeta],
        keys: &[u64],
    ) -> Result<Option<usize>, ParamError> {
        if self.policy.reorder && keys.len() != writes.len() {
            return Err(ParamError::KeysLength);
        }
        let mut base = None;
        for (i, write) in writes.iter().enumerate() {
            if write.fua && write.covers(sector) {
                base = Some(i);
            }
        }
        let first_contender = match base {
            Some(b) => b.saturating_add(1),
            None => 0,
        };
        let mut best: Option<(u64, usize)> = None;
        for (i, write) in writes.iter().enumerate().skip(first_contender) {
            let Some(sector_index) = write.sector_index(sector) else {
                continue;
            };
            if write.fua || !self.sector_kept(i, write, sector_index) {
                continue;
            }
            let key = if !self.policy.reorder {
                0
            } else if self.policy.is_atomic(write) {
                keys.get(i).copied().unwrap_or(0)
            } else {
                rng::hash(self.seed, TAG_SECTOR_ORDER, i as u64, sector)
            };
            // Indices grow, so on equal keys the later write wins.
            match best {
                Some((best_key, _)) if key < best_key => {}
                _ => best = Some((key, i)),
            }
        }
        Ok(match best {
            Some((_, i)) => Some(i),
            None => base,
        })
    }

    /// The report of the cut over `writes`, the pending list.
    pub fn report(&self, writes: &[WriteMeta]) -> CrashReport {
        let mut report = CrashReport::new();
        for (i, write) in writes.iter().enumerate() {
            report.record(self.fate(i, write), write.sectors);
        }
        report
    }
}

/// A bad power command, or I/O while the power is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerError {
    /// The power is already off: power the device on first.
    AlreadyOff,
    /// A cut is already armed: disarm it first.
    AlreadyArmed,
    /// No cut is armed.
    NotArmed,
    /// The power is already on.
    AlreadyOn,
    /// A cut armed for zero writes, or for more than [`MAX_WRITES_BEFORE_CUT`].
    BadCount,
    /// I/O while the power is off.
    PoweredOff,
}

impl PowerError {
    /// The positive errno for this error.
    pub const fn errno(self) -> i32 {
        match self {
            Self::AlreadyOff | Self::AlreadyArmed => EBUSY,
            Self::NotArmed | Self::AlreadyOn | Self::BadCount => EINVAL,
            Self::PoweredOff => EIO,
        }
    }
}

/// What the device does once a write has completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterWrite {
    /// Nothing more.
    Continue,
    /// The write was the last one an armed cut waited for: the power is now off, and the device
    /// must build the crash image.
    Cut,
}

/// The power state of the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PowerState {
    /// Powered, no cut armed.
    #[default]
    Running,
    /// Powered, with a cut armed to happen when `remaining` more writes have completed.
    CutPending {
        /// Writes still to complete before the cut, at least one.
        remaining: u64,
    },
    /// Cut: the device holds the crash image and fails I/O until powered on.
    Off,
}

impl PowerState {
    /// Whether the power is on.
    pub const fn is_on(&self) -> bool {
        !matches!(self, Self::Off)
    }

    /// Cuts the power now, disarming any armed cut.
    pub fn cut_now(&mut self) -> Result<(), PowerError> {
        match self {
            Self::Off => Err(PowerError::AlreadyOff),
            Self::Running | Self::CutPending { .. } => {
                *self = Self::Off;
                Ok(())
            }
        }
    }

    /// Arms a cut that happens right after the next `writes` writes complete.
    pub fn arm(&mut self, writes: u64) -> Result<(), PowerError> {
        match self {
            Self::Off => Err(PowerError::AlreadyOff),
            Self::CutPending { .. } => Err(PowerError::AlreadyArmed),
            Self::Running => {
                if writes == 0 || writes > MAX_WRITES_BEFORE_CUT {
                    return Err(PowerError::BadCount);
                }
                *self = Self::CutPending { remaining: writes };
                Ok(())
            }
        }
    }

    /// Arms a cut after a number of writes drawn from `seed`, in `1..=max_writes`, and returns
    /// that number.
    pub fn arm_random(&mut self, seed: u64, max_writes: u32) -> Result<u64, PowerError> {
        let writes = random_cut_point(seed, max_writes)?;
        self.arm(writes)?;
        Ok(writes)
    }

    /// Disarms an armed cut.
    pub fn disarm(&mut self) -> Result<(), PowerError> {
        match self {
            Self::Off => Err(PowerError::AlreadyOff),
            Self::Running => Err(PowerError::NotArmed),
            Self::CutPending { .. } => {
                *self = Self::Running;
                Ok(())
            }
        }
    }

    /// Powers the device on again after a cut.
    pub fn power_on(&mut self) -> Result<(), PowerError> {
        match self {
            Self::Off => {
                *self = Self::Running;
                Ok(())
            }
            Self::Running | Self::CutPending { .. } => Err(PowerError::AlreadyOn),
        }
    }

    /// Admits an I/O (read, write or flush) if the power is on.
    pub const fn admit_io(&self) -> Result<(), PowerError> {
        match self {
            Self::Off => Err(PowerError::PoweredOff),
            Self::Running | Self::CutPending { .. } => Ok(()),
        }
    }

    /// Counts a completed write towards an armed cut, and cuts the power if it was the last one.
    pub fn write_completed(&mut self) -> Result<AfterWrite, PowerError> {
        match self {
            Self::Off => Err(PowerError::PoweredOff),
            Self::Running => Ok(AfterWrite::Continue),
            Self::CutPending { remaining } => {
                if *remaining <= 1 {
                    *self = Self::Off;
                    Ok(AfterWrite::Cut)
                } else {
                    *remaining -= 1;
                    Ok(AfterWrite::Continue)
                }
            }
        }
    }
}

/// A number of writes in `1..=max_writes` drawn from `seed`, for a cut "at a random write".
pub fn random_cut_point(seed: u64, max_writes: u32) -> Result<u64, PowerError> {
    if max_writes == 0 {
        return Err(PowerError::BadCount);
    }
    let mut rng = SplitMix64::new(seed);
    Ok(u64::from(rng.below(max_writes)) + 1)
}

/// One entry of a device's history, in completion order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A completed write.
    Write(WriteMeta),
    /// A completed flush (`REQ_PREFLUSH`); a flush with data is a flush followed by a write.
    Flush,
}

/// What a sector of an image holds, as the caller identified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shown {
    /// The content of the initial image.
    Initial,
    /// The content that event `.0` (a write) wrote there.
    Write(usize),
    /// Anything else.
    Unknown,
}

/// An image to check, one sector at a time.
///
/// The caller identifies each sector's content, so every write must have written content that
/// tells it apart from the initial content and from every other write to that sector (the crash
/// campaign stamps each sector it writes with the write's number).
pub trait Image {
    /// The number of sectors of the image.
    fn sectors(&self) -> u64;

    /// What `sector` holds.
    fn shown(&self, sector: u64) -> Shown;
}

impl Image for [Shown] {
    fn sectors(&self) -> u64 {
        self.len() as u64
    }

    fn shown(&self, sector: u64) -> Shown {
        usize::try_from(sector)
            .ok()
            .and_then(|i| self.get(i))
            .copied()
            .unwrap_or(Shown::Unknown)
    }
}

/// Why the model forbids an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The sector holds content that no write and not the initial image put there.
    Foreign {
        /// The sector.
        sector: u64,
    },
    /// The sector holds a version older than its durable content (a flushed write, or a FUA
    /// write completed since the last flush).
    Stale {
        /// The sector.
        sector: u64,
    },
    /// An all-or-nothing write shows on some sectors but not on `sector`, where only it or a
    /// write allowed to land after it may show.
    AtomicTorn {
        /// The event index of the write.
        write: usize,
        /// The sector.
        sector: u64,
    },
    /// With reordering, no order of the writes that land as one unit explains the image.
    OrderCycle,
}

/// Why [`check_image`] gave no verdict, or its negative verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// The scratch buffer is shorter than the history.
    ScratchTooSmall {
        /// The length needed: one byte per event.
        needed: usize,
    },
    /// A write of the history runs past the end of the image.
    WriteOutOfRange {
        /// The event index of the write.
        event: usize,
    },
    /// The model forbids the image.
    Forbidden(Violation),
}

/// Scratch state of an event that is not a unit.
const NOT_UNIT: u8 = 0;
/// Scratch state of a unit not yet placed in the order.
const UNIT_LIVE: u8 = 1;
/// Scratch state of a unit placed in the order.
const UNIT_PLACED: u8 = 2;

/// The history as the checker reads it.
struct History<'a> {
    events: &'a [Event],
    /// The index of the first event after the last flush: the pending list starts there.
    pending: usize,
    policy: &'a CrashPolicy,
}

impl History<'_> {
    fn write(&self, event: usize) -> Option<&WriteMeta> {
        match self.events.get(event) {
            Some(Event::Write(w)) => Some(w),
            _ => None,
        }
    }

    /// The base of `sector` (its durable content) and the index of its first possible
    /// contender.
    fn base(&self, sector: u64) -> (Shown, usize) {
        let mut base = Shown::Initial;
        let mut first_contender = self.pending;
        for (j, event) in self.events.iter().enumerate() {
            if let Event::Write(w) = event {
                if w.covers(sector) && (j < self.pending || w.fua) {
                    base = Shown::Write(j);
                    first_contender = first_contender.max(j.saturating_add(1));
                }
            }
        }
        (base, first_contender)
    }

    /// Whether event `event` is a contender of `sector`, given its first possible contender.
    fn is_contender(&self, event: usize, sector: u64, first_contender: usize) -> bool {
        event >= first_contender
            && self
                .write(event)
                .is_some_and(|w| !w.fua && w.covers(sector))
    }

    /// Whether event `event` is a pending all-or-nothing write that the cut can have lost.
    fn is_pending_atomic(&self, event: usize) -> bool {
        event >= self.pending
            && self
                .write(event)
                .is_some_and(|w| !w.fua && self.policy.is_atomic(w))
    }
}

fn state(scratch: &[u8], event: usize) -> u8 {
    scratch.get(event).copied().unwrap_or(NOT_UNIT)
}

fn set_state(scratch: &mut [u8], event: usize, value: u8) {
    if let Some(slot) = scratch.get_mut(event) {
        *slot = value;
    }
}

/// Decides whether `image` is one the model allows after a power cut at the end of `events`,
/// starting from the initial image, under `policy` (only its `reorder` and `atomic_as_plain`
/// matter: weights never forbid an image).
///
/// `scratch` needs one byte per event. The time taken is proportional to the image's sectors
/// times the events, plus, with reordering, the cube of the pending list's length times the
/// sectors of its all-or-nothing writes; the tests and the crash campaign use small histories.
pub fn check_image<I: Image + ?Sized>(
    events: &[Event],
    policy: &CrashPolicy,
    image: &I,
    scratch: &mut [u8],
) -> Result<(), CheckError> {
    let n = events.len();
    let Some(scratch) = scratch.get_mut(..n) else {
        return Err(CheckError::ScratchTooSmall { needed: n });
    };
    scratch.fill(NOT_UNIT);
    let mut pending = 0;
    for (j, event) in events.iter().enumerate() {
        match event {
            Event::Flush => pending = j.saturating_add(1),
            Event::Write(w) => {
                if w.end_sector() > image.sectors() {
                    return Err(CheckError::WriteOutOfRange { event: j });
                }
            }
        }
    }
    let history = History {
        events,
        pending,
        policy,
    };
    let forbid = |v| Err(CheckError::Forbidden(v));

    // Each sector shows its base or one of its contenders.
    for sector in 0..image.sectors() {
        let (base, first_contender) = history.base(sector);
        let shown = image.shown(sector);
        if shown == base {
            continue;
        }
        match shown {
            Shown::Write(j) if history.is_contender(j, sector, first_contender) => {}
            Shown::Write(j) if history.write(j).is_some_and(|w| w.covers(sector)) => {
                return forbid(Violation::Stale { sector });
            }
            Shown::Initial => return forbid(Violation::Stale { sector }),
            Shown::Write(_) | Shown::Unknown => return forbid(Violation::Foreign { sector }),
        }
    }

    // An all-or-nothing write that shows anywhere was kept whole (one that shows nowhere may as
    // well have been lost, which constrains nothing). Mark those and the FUA writes as units.
    for (j, event) in events.iter().enumerate().skip(pending) {
        let Event::Write(w) = event else {
            continue;
        };
        let unit = w.fua
            || (history.is_pending_atomic(j)
                && (w.first_sector..w.end_sector()).any(|s| image.shown(s) == Shown::Write(j)));
        if unit {
            set_state(scratch, j, UNIT_LIVE);
        }
    }

    // Wherever a kept all-or-nothing write contends, it or a write allowed after it shows.
    for (j, event) in events.iter().enumerate().skip(pending) {
        let Event::Write(w) = event else {
            continue;
        };
        if w.fua || state(scratch, j) != UNIT_LIVE {
            continue;
        }
        for sector in w.first_sector..w.end_sector() {
            let (_, first_contender) = history.base(sector);
            if j < first_contender {
                continue;
            }
            let allowed = match image.shown(sector) {
                Shown::Write(k) if k == j => true,
                Shown::Write(k) if history.is_contender(k, sector, first_contender) => {
                    policy.reorder || k > j
                }
                _ => false,
            };
            if !allowed {
                return forbid(Violation::AtomicTorn { write: j, sector });
            }
        }
    }

    if !policy.reorder {
        return Ok(());
    }

    // With reordering, the units must have an order: a unit comes after every unit it beats on a
    // sector, and a FUA write keeps completion order with every unit it shares a sector with.
    // Place units with no unplaced predecessor until none is left, or none can be placed.
    loop {
        let mut left = false;
        let mut placed = false;
        for x in pending..n {
            if state(scratch, x) != UNIT_LIVE {
                continue;
            }
            left = true;
            if !has_unplaced_predecessor(&history, image, scratch, x) {
                set_state(scratch, x, UNIT_PLACED);
                placed = true;
            }
        }
        if !left {
            return Ok(());
        }
        if !placed {
            return forbid(Violation::OrderCycle);
        }
    }
}

/// Whether unit `x` must come after a unit not yet placed.
fn has_unplaced_predecessor<I: Image + ?Sized>(
    history: &History<'_>,
    image: &I,
    scratch: &[u8],
    x: usize,
) -> bool {
    let Some(wx) = history.write(x) else {
        return false;
    };
    let live = |y: usize| state(scratch, y) == UNIT_LIVE;
    // Completion order with FUA writes on shared sectors.
    for y in history.pending..x {
        if live(y)
            && history
                .write(y)
                .is_some_and(|wy| (wx.fua || wy.fua) && wx.overlaps(wy))
        {
            return true;
        }
    }
    if wx.fua {
        return false;
    }
    // Every other kept all-or-nothing contender of a sector that `x` wins lands before `x`.
    for sector in wx.first_sector..wx.end_sector() {
        if image.shown(sector) != Shown::Write(x) {
            continue;
        }
        let (_, first_contender) = history.base(sector);
        for a in first_contender..history.events.len() {
            if a != x && live(a) && history.is_contender(a, sector, first_contender) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    fn w(first: u64, sectors: u32) -> WriteMeta {
        WriteMeta::new(first, sectors, false, false).expect("valid write")
    }

    fn atomic(first: u64, sectors: u32) -> WriteMeta {
        WriteMeta::new(first, sectors, true, false).expect("valid write")
    }

    fn fua(first: u64, sectors: u32) -> WriteMeta {
        WriteMeta::new(first, sectors, false, true).expect("valid write")
    }

    fn policy(keep: u16, lose: u16, tear: u16) -> CrashPolicy {
        CrashPolicy::new(keep, lose, tear).expect("valid policy")
    }

    /// The crash image of a device of `sectors` sectors whose whole history is the pending list
    /// `writes` (no flush): what each sector shows, as an index into `writes` or `None` for the
    /// initial content.
    fn crash(planner: &Planner, writes: &[WriteMeta], sectors: u64) -> Vec<Option<usize>> {
        let mut keys = std::vec![0; writes.len()];
        planner.order_keys(writes, &mut keys).expect("keys");
        (0..sectors)
            .map(|s| planner.sector_winner(s, writes, &keys).expect("winner"))
            .collect()
    }

    /// The same image as the checker sees it, with writes numbered as events.
    fn as_image(crash: &[Option<usize>]) -> Vec<Shown> {
        crash
            .iter()
            .map(|v| v.map_or(Shown::Initial, Shown::Write))
            .collect()
    }

    fn events(writes: &[WriteMeta]) -> Vec<Event> {
        writes.iter().copied().map(Event::Write).collect()
    }

    fn check(events: &[Event], policy: &CrashPolicy, image: &[Shown]) -> Result<(), CheckError> {
        let mut scratch = std::vec![0u8; events.len()];
        check_image(events, policy, image, &mut scratch)
    }

    fn all_policies() -> Vec<CrashPolicy> {
        let mut all = Vec::new();
        for (k, l, t) in [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (5, 1, 10)] {
            for reorder in [false, true] {
                all.push(policy(k, l, t).with_reorder(reorder));
            }
        }
        all
    }

    #[test]
    fn write_records_are_validated() {
        assert_eq!(
            WriteMeta::new(0, 0, false, false),
            Err(ParamError::EmptyWrite)
        );
        assert_eq!(
            WriteMeta::new(u64::MAX, 1, false, false),
            Err(ParamError::SectorOverflow)
        );
        let last = WriteMeta::new(u64::MAX - 1, 1, true, true).expect("fits");
        assert_eq!(last.end_sector(), u64::MAX);
        assert!(last.atomic() && last.fua());
        let x = w(8, 4);
        assert!(x.covers(8) && x.covers(11) && !x.covers(7) && !x.covers(12));
        assert_eq!(x.sector_index(10), Some(2));
        assert_eq!(x.sector_index(12), None);
        assert!(x.overlaps(&w(11, 1)) && !x.overlaps(&w(12, 3)) && !x.overlaps(&w(0, 8)));
        assert_eq!(ParamError::EmptyWrite.errno(), EINVAL);
    }

    #[test]
    fn policies_are_validated() {
        assert_eq!(CrashPolicy::new(0, 0, 0), Err(ParamError::NoOutcome));
        assert_eq!(
            CrashPolicy::new(MAX_WEIGHT + 1, 0, 0),
            Err(ParamError::WeightTooLarge)
        );
        assert_eq!(
            CrashPolicy::new(0, 0, MAX_WEIGHT + 1).map_err(ParamError::errno),
            Err(EINVAL)
        );
        let p = policy(MAX_WEIGHT, MAX_WEIGHT, MAX_WEIGHT)
            .with_reorder(true)
            .with_atomic_as_plain(true);
        assert!(p.reorder() && p.atomic_as_plain());
        assert_eq!((p.keep(), p.lose(), p.tear()), (1000, 1000, 1000));
        assert_eq!(CrashPolicy::default(), CrashPolicy::DEFAULT);
        assert!(!p.is_atomic(&atomic(0, 2)));
        assert!(CrashPolicy::DEFAULT.is_atomic(&atomic(0, 2)));
    }

    #[test]
    fn weights_decide_the_fates() {
        let writes: Vec<WriteMeta> = (0..64).map(|i| w(i * 8, 8)).collect();
        for seed in 0..20 {
            let keep = Planner::new(seed, policy(1, 0, 0));
            let lose = Planner::new(seed, policy(0, 1, 0));
            let tear = Planner::new(seed, policy(0, 0, 1));
            for (i, x) in writes.iter().enumerate() {
                assert_eq!(keep.fate(i, x), Fate::Kept);
                assert_eq!(lose.fate(i, x), Fate::Lost);
                assert_ne!(tear.fate(i, x), Fate::Durable);
            }
            assert!(crash(&keep, &writes, 512)
                .iter()
                .enumerate()
                .all(|(s, v)| *v == Some(s / 8)));
            assert!(crash(&lose, &writes, 512).iter().all(Option::is_none));
        }
        // Even odds over 3000 writes: each outcome comes near 1000 times (a standard deviation
        // is 26), as a tear of 8 sectors keeps all or none of them only one time in 128.
        let many: Vec<WriteMeta> = (0..3000).map(|i| w(i * 8, 8)).collect();
        let report = Planner::new(5, CrashPolicy::DEFAULT).report(&many);
        for count in [report.writes_kept, report.writes_lost, report.writes_torn] {
            assert!((850..1150).contains(&count), "{report:?}");
        }
    }

    #[test]
    fn fua_write_survives_every_cut() {
        // An earlier write, the FUA write, and a later one, overlapping in every way.
        let writes = [w(0, 8), fua(2, 4), w(4, 4), atomic(0, 8)];
        for p in all_policies() {
            for seed in 0..300 {
                let planner = Planner::new(seed, p);
                assert_eq!(planner.fate(1, &writes[1]), Fate::Durable);
                let image = crash(&planner, &writes, 8);
                // The FUA write or a later one, never the earlier one or the initial data.
                assert!(
                    image[2..6].iter().all(|v| matches!(v, Some(1..))),
                    "{p:?} seed {seed}"
                );
                assert_eq!(check(&events(&writes), &p, &as_image(&image)), Ok(()));
            }
        }
        // Alone, it is simply there.
        for seed in 0..100 {
            let image = crash(&Planner::new(seed, policy(0, 1, 1)), &[fua(3, 2)], 6);
            assert_eq!(image, [None, None, None, Some(0), Some(0), None]);
        }
    }

    /// Runs `events` on a model of the device that keeps the pending list as the kernel module
    /// does, then cuts the power: returns the image with writes numbered as events.
    fn run(events: &[Event], sectors: u64, planner: &Planner) -> Vec<Shown> {
        let len = usize::try_from(sectors).expect("small");
        let mut current = std::vec![Shown::Initial; len];
        let mut durable = current.clone();
        let mut pending: Vec<(usize, WriteMeta)> = Vec::new();
        for (j, event) in events.iter().enumerate() {
            match event {
                Event::Flush => {
                    durable.clone_from(&current);
                    pending.clear();
                }
                Event::Write(m) => {
                    for s in m.first_sector()..m.end_sector() {
                        current[s as usize] = Shown::Write(j);
                    }
                    pending.push((j, *m));
                }
            }
        }
        let metas: Vec<WriteMeta> = pending.iter().map(|&(_, m)| m).collect();
        let mut keys = std::vec![0; metas.len()];
        planner.order_keys(&metas, &mut keys).expect("keys");
        let mut image = durable;
        for &(_, m) in &pending {
            for s in m.first_sector()..m.end_sector() {
                if let Some(i) = planner.sector_winner(s, &metas, &keys).expect("winner") {
                    image[s as usize] = Shown::Write(pending[i].0);
                }
            }
        }
        image
    }

    #[test]
    fn flush_makes_every_earlier_write_survive() {
        let history = [
            Event::Write(w(0, 4)),
            Event::Write(atomic(2, 4)),
            Event::Write(w(6, 2)),
            Event::Flush,
            Event::Write(w(8, 4)),
            Event::Write(atomic(10, 2)),
        ];
        for p in all_policies() {
            for seed in 0..300 {
                let image = run(&history, 12, &Planner::new(seed, p));
                let flushed = [0, 0, 1, 1, 1, 1, 2, 2].map(Shown::Write);
                assert_eq!(image[..8], flushed, "{p:?} seed {seed}");
                assert_eq!(check(&history, &p, &image), Ok(()));
            }
        }
        // A cut that loses everything shows exactly the flushed image.
        let image = run(&history, 12, &Planner::new(1, policy(0, 1, 0)));
        assert!(image[8..].iter().all(|&v| v == Shown::Initial));
    }

    /// Whether every sector of `writes[index]` shows it, or none does.
    fn whole_or_absent(image: &[Option<usize>], writes: &[WriteMeta], index: usize) -> bool {
        let m = writes[index];
        let shows = (m.first_sector()..m.end_sector())
            .filter(|&s| image[s as usize] == Some(index))
            .count();
        shows == 0 || shows == m.sectors() as usize
    }

    #[test]
    fn atomic_writes_are_never_partially_present() {
        // Disjoint atomic writes among plain ones: nothing may hide part of them.
        let writes = [
            atomic(0, 8),
            w(8, 8),
            atomic(16, 8),
            w(24, 8),
            atomic(32, 8),
        ];
        for p in all_policies() {
            for seed in 0..500 {
                let planner = Planner::new(seed, p);
                for i in [0, 2, 4] {
                    assert!(!matches!(planner.fate(i, &writes[i]), Fate::Torn { .. }));
                }
                let image = crash(&planner, &writes, 40);
                for i in [0, 2, 4] {
                    assert!(whole_or_absent(&image, &writes, i), "{p:?} seed {seed}");
                }
            }
        }
    }

    #[test]
    fn atomic_as_plain_lets_atomic_writes_tear() {
        let writes = [atomic(0, 8), atomic(8, 8)];
        let events = events(&writes);
        let honest = policy(1, 1, 1);
        let plain = honest.with_atomic_as_plain(true);
        let mut tears = 0;
        for seed in 0..200 {
            let planner = Planner::new(seed, plain);
            let image = crash(&planner, &writes, 16);
            if (0..2).any(|i| !whole_or_absent(&image, &writes, i)) {
                tears += 1;
                // The honest checker notices; the one told atomics are plain accepts it.
                assert!(matches!(
                    check(&events, &honest, &as_image(&image)),
                    Err(CheckError::Forbidden(Violation::AtomicTorn { .. }))
                ));
                assert_eq!(check(&events, &plain, &as_image(&image)), Ok(()));
            }
            for (i, m) in writes.iter().enumerate() {
                let torn = matches!(planner.fate(i, m), Fate::Torn { .. });
                assert_ne!(torn, whole_or_absent(&image, &writes, i));
            }
        }
        // A third of the writes draw a tear, and nearly all tears of 8 sectors are real.
        assert!(tears > 50, "{tears}");
    }

    #[test]
    fn planner_is_a_pure_function_of_the_seed() {
        let writes: Vec<WriteMeta> = (0..32u32)
            .map(|i| {
                let first = u64::from(i * 5 % 48);
                WriteMeta::new(first, 1 + i % 8, i % 3 == 0, i % 11 == 5).expect("valid")
            })
            .collect();
        for p in all_policies() {
            let images: Vec<Vec<Option<usize>>> = (0..40)
                .map(|seed| crash(&Planner::new(seed, p), &writes, 56))
                .collect();
            for (seed, image) in images.iter().enumerate() {
                let planner = Planner::new(seed as u64, p);
                assert_eq!(&crash(&planner, &writes, 56), image);
                assert_eq!(planner.report(&writes), planner.report(&writes));
                // Re-querying backwards gives the same answers.
                for (i, m) in writes.iter().enumerate().rev() {
                    for k in (0..m.sectors()).rev() {
                        assert_eq!(
                            planner.sector_kept(i, m, k),
                            Planner::new(seed as u64, p).sector_kept(i, m, k)
                        );
                    }
                }
            }
            // Different seeds give different plans, unless the policy leaves no choice.
            let fates = |seed| -> Vec<Fate> {
                let planner = Planner::new(seed, p);
                writes
                    .iter()
                    .enumerate()
                    .map(|(i, m)| planner.fate(i, m))
                    .collect()
            };
            let keep_only = p.lose() == 0 && p.tear() == 0;
            let lose_only = p.keep() == 0 && p.tear() == 0;
            if keep_only || lose_only {
                assert!((1..40).all(|seed| fates(seed) == fates(0)));
                // Everything kept and reordered: only the order changes, and it does.
                let varies = images.iter().any(|i| *i != images[0]);
                assert_eq!(varies, keep_only && p.reorder(), "{p:?}");
            } else {
                for seed in 0..39 {
                    assert_ne!(fates(seed), fates(seed + 1), "{p:?} seed {seed}");
                    assert_ne!(images[seed as usize], images[seed as usize + 1]);
                }
            }
        }
    }

    #[test]
    fn report_counts_match_the_plan() {
        let writes: Vec<WriteMeta> = (0..200u32)
            .map(|i| {
                WriteMeta::new(u64::from(i), 1 + i % 9, i % 4 == 0, i % 13 == 0).expect("valid")
            })
            .collect();
        for seed in 0..20 {
            for p in [policy(1, 1, 1), policy(1, 1, 1).with_atomic_as_plain(true)] {
                let planner = Planner::new(seed, p);
                let mut expected = CrashReport::new();
                for (i, m) in writes.iter().enumerate() {
                    let kept = (0..m.sectors())
                        .filter(|&k| planner.sector_kept(i, m, k))
                        .count() as u32;
                    match planner.fate(i, m) {
                        Fate::Durable => assert!(m.fua() && kept == m.sectors()),
                        Fate::Kept => {
                            assert!(!m.fua() && kept == m.sectors());
                            expected.writes_kept += 1;
                        }
                        Fate::Lost => {
                            assert!(!m.fua() && kept == 0);
                            expected.writes_lost += 1;
                        }
                        Fate::Torn { sectors_kept } => {
                            assert!(!p.is_atomic(m) && !m.fua());
                            assert_eq!(sectors_kept, kept);
                            assert!(0 < kept && kept < m.sectors());
                            expected.writes_torn += 1;
                            expected.sectors_torn += u64::from(m.sectors() - kept);
                        }
                    }
                    assert!(!planner.sector_kept(i, m, m.sectors()));
                }
                let report = planner.report(&writes);
                assert_eq!(report, expected);
                let fua = writes.iter().filter(|m| m.fua()).count() as u64;
                assert_eq!(
                    report.writes_kept + report.writes_lost + report.writes_torn + fua,
                    200
                );
                assert!(report.writes_torn > 0 && report.sectors_torn >= report.writes_torn);
            }
        }
    }

    #[test]
    fn without_reordering_the_later_write_wins() {
        let writes = [w(0, 4), w(0, 4), atomic(2, 4)];
        for seed in 0..200 {
            let image = crash(&Planner::new(seed, policy(1, 0, 0)), &writes, 6);
            assert_eq!(image, [1, 1, 2, 2, 2, 2].map(Some));
        }
    }

    #[test]
    fn with_reordering_any_kept_version_may_win() {
        let writes = [w(0, 4), w(0, 4)];
        let p = policy(1, 0, 0).with_reorder(true);
        let mut seen = [[false; 2]; 4];
        for seed in 0..200 {
            let image = crash(&Planner::new(seed, p), &writes, 4);
            for (s, v) in image.iter().enumerate() {
                seen[s][v.expect("kept")] = true;
            }
        }
        assert!(seen.iter().flatten().all(|&x| x), "{seen:?}");
    }

    #[test]
    fn reordered_atomic_writes_land_whole() {
        let writes = [atomic(0, 4), atomic(0, 4)];
        let p = policy(1, 0, 0).with_reorder(true);
        let mut seen = [false; 2];
        for seed in 0..200 {
            let image = crash(&Planner::new(seed, p), &writes, 4);
            assert!(image.iter().all(|&v| v == image[0]), "{image:?}");
            seen[image[0].expect("kept")] = true;
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn fua_orders_overlapping_atomic_writes() {
        // A covers 0..2, the FUA write 1..2, B 0..2: A lands before the FUA write, and B after,
        // so B wins sector 0 too, whatever the seed.
        let writes = [atomic(0, 2), fua(1, 1), atomic(0, 2)];
        let p = policy(1, 0, 0).with_reorder(true);
        for seed in 0..200 {
            let image = crash(&Planner::new(seed, p), &writes, 2);
            assert_eq!(image, [Some(2), Some(2)]);
        }
        // The checker agrees that A on sector 0 with B on sector 1 is impossible.
        let cycle = [Shown::Write(0), Shown::Write(2)];
        assert_eq!(
            check(&events(&writes), &p, &cycle),
            Err(CheckError::Forbidden(Violation::OrderCycle))
        );
        // Without the FUA write in the way, it is a fine reordering of plain writes.
        let plain = [w(0, 2), w(1, 1), w(0, 2)];
        assert_eq!(check(&events(&plain), &p, &cycle), Ok(()));
        // But two atomic writes cannot each win one sector of the other.
        let both = [atomic(0, 2), atomic(0, 2)];
        let crossed = [Shown::Write(0), Shown::Write(1)];
        assert_eq!(
            check(&events(&both), &p, &crossed),
            Err(CheckError::Forbidden(Violation::OrderCycle))
        );
        // Unrelated FUA writes do not order anything.
        let apart = [atomic(0, 2), fua(5, 1), atomic(0, 2)];
        let mut seen = [false; 3];
        for seed in 0..200 {
            let image = crash(&Planner::new(seed, p), &apart, 2);
            seen[image[0].expect("kept")] = true;
        }
        assert_eq!(seen, [true, false, true]);
    }

    #[test]
    fn checker_rejects_what_the_model_forbids() {
        let history = [
            Event::Write(w(0, 2)),
            Event::Flush,
            Event::Write(w(2, 2)),
            Event::Write(atomic(0, 4)),
            Event::Write(fua(5, 1)),
            Event::Write(w(5, 1)),
        ];
        let off = policy(1, 1, 1);
        let on = off.with_reorder(true);
        let atomic_kept = Shown::Write(3);
        let good = [
            atomic_kept,
            atomic_kept,
            atomic_kept,
            atomic_kept,
            Shown::Initial,
            Shown::Write(4),
        ];
        for p in [off, on] {
            assert_eq!(check(&history, &p, &good), Ok(()));
            // A flushed sector reverted.
            let mut bad = good;
            bad[0] = Shown::Initial;
            let stale = CheckError::Forbidden(Violation::Stale { sector: 0 });
            assert_eq!(check(&history, &p, &bad), Err(stale));
            // Content no write put on the sector.
            let foreign = CheckError::Forbidden(Violation::Foreign { sector: 1 });
            for other in [Shown::Write(2), Shown::Write(1), Shown::Unknown] {
                bad = good;
                bad[1] = other;
                assert_eq!(check(&history, &p, &bad), Err(foreign));
            }
            // A FUA write reverted.
            bad = good;
            bad[5] = Shown::Initial;
            let reverted = CheckError::Forbidden(Violation::Stale { sector: 5 });
            assert_eq!(check(&history, &p, &bad), Err(reverted));
            // An atomic write missing a sector.
            bad = good;
            bad[3] = Shown::Initial;
            let torn = CheckError::Forbidden(Violation::AtomicTorn {
                write: 3,
                sector: 3,
            });
            assert_eq!(check(&history, &p, &bad), Err(torn));
            // The plain write after the FUA write may land.
            bad = good;
            bad[5] = Shown::Write(5);
            assert_eq!(check(&history, &p, &bad), Ok(()));
        }
        // The earlier plain write landing after the atomic one is a reordering.
        let mut reordered = good;
        reordered[2] = Shown::Write(2);
        assert_eq!(check(&history, &on, &reordered), Ok(()));
        assert_eq!(
            check(&history, &off, &reordered),
            Err(CheckError::Forbidden(Violation::AtomicTorn {
                write: 3,
                sector: 2
            }))
        );
        // Bad inputs.
        let mut scratch = [0u8; 5];
        assert_eq!(
            check_image(&history, &off, good.as_slice(), &mut scratch),
            Err(CheckError::ScratchTooSmall { needed: 6 })
        );
        assert_eq!(
            check(&history, &off, &good[..5]),
            Err(CheckError::WriteOutOfRange { event: 4 })
        );
    }

    #[test]
    fn keys_must_match_the_writes() {
        let writes = [w(0, 1), w(0, 1)];
        let planner = Planner::new(0, policy(1, 1, 1).with_reorder(true));
        let mut short = [0u64; 1];
        assert_eq!(
            planner.order_keys(&writes, &mut short),
            Err(ParamError::KeysLength)
        );
        assert_eq!(
            planner.sector_winner(0, &writes, &short),
            Err(ParamError::KeysLength)
        );
        // Without reordering the keys are not needed.
        let in_order = Planner::new(0, policy(1, 0, 0));
        assert_eq!(in_order.sector_winner(0, &writes, &[]), Ok(Some(1)));
        assert_eq!(in_order.sector_winner(1, &writes, &[]), Ok(None));
    }

    #[test]
    fn power_state_machine() {
        let mut p = PowerState::default();
        assert_eq!(p, PowerState::Running);
        assert!(p.is_on() && p.admit_io().is_ok());
        assert_eq!(p.write_completed(), Ok(AfterWrite::Continue));
        assert_eq!(p.power_on(), Err(PowerError::AlreadyOn));
        assert_eq!(p.disarm(), Err(PowerError::NotArmed));
        assert_eq!(p.arm(0), Err(PowerError::BadCount));
        assert_eq!(p.arm(MAX_WRITES_BEFORE_CUT + 1), Err(PowerError::BadCount));
        assert_eq!(p, PowerState::Running);
        assert_eq!(p.arm(3), Ok(()));
        assert_eq!(p.arm(3), Err(PowerError::AlreadyArmed));
        assert_eq!(p.power_on(), Err(PowerError::AlreadyOn));
        assert_eq!(p.write_completed(), Ok(AfterWrite::Continue));
        assert_eq!(p.write_completed(), Ok(AfterWrite::Continue));
        assert_eq!(p, PowerState::CutPending { remaining: 1 });
        assert_eq!(p.write_completed(), Ok(AfterWrite::Cut));
        assert_eq!(p, PowerState::Off);
        assert!(!p.is_on());
        assert_eq!(p.admit_io(), Err(PowerError::PoweredOff));
        assert_eq!(p.write_completed(), Err(PowerError::PoweredOff));
        assert_eq!(p.cut_now(), Err(PowerError::AlreadyOff));
        assert_eq!(p.arm(1), Err(PowerError::AlreadyOff));
        assert_eq!(p.disarm(), Err(PowerError::AlreadyOff));
        assert_eq!(p.power_on(), Ok(()));
        assert_eq!(p.arm(5), Ok(()));
        assert_eq!(p.disarm(), Ok(()));
        assert_eq!(p.arm(5), Ok(()));
        assert_eq!(p.cut_now(), Ok(()));
        assert_eq!(p, PowerState::Off);
        assert_eq!(p.power_on(), Ok(()));
        assert_eq!(p.cut_now(), Ok(()));
    }

    #[test]
    fn power_errors_have_errnos() {
        assert_eq!(PowerError::AlreadyOff.errno(), EBUSY);
        assert_eq!(PowerError::AlreadyArmed.errno(), EBUSY);
        assert_eq!(PowerError::NotArmed.errno(), EINVAL);
        assert_eq!(PowerError::AlreadyOn.errno(), EINVAL);
        assert_eq!(PowerError::BadCount.errno(), EINVAL);
        assert_eq!(PowerError::PoweredOff.errno(), EIO);
    }

    #[test]
    fn random_cut_points_are_in_range_and_reproducible() {
        assert_eq!(random_cut_point(1, 0), Err(PowerError::BadCount));
        assert_eq!(random_cut_point(9, 1), Ok(1));
        let mut seen = [false; 10];
        for seed in 0..500 {
            let n = random_cut_point(seed, 10).expect("valid");
            assert!((1..=10).contains(&n));
            assert_eq!(random_cut_point(seed, 10), Ok(n));
            seen[n as usize - 1] = true;
        }
        assert!(seen.iter().all(|&x| x));
        let mut p = PowerState::Running;
        let n = p.arm_random(77, 1000).expect("armed");
        assert_eq!(p, PowerState::CutPending { remaining: n });
        assert_eq!(p.arm_random(77, 1000), Err(PowerError::AlreadyArmed));
        let mut q = PowerState::Running;
        assert_eq!(q.arm_random(77, 0), Err(PowerError::BadCount));
        assert_eq!(q, PowerState::Running);
    }
}
