// SPDX-License-Identifier: GPL-2.0

//! What the crash campaign knows about its files, and how it judges what it finds after a power
//! cut. Pure: the guest side records operations here and hands in what it read back.
//!
//! Versions are per unit and only grow, so a version number names one write for good. A unit
//! after a cut must show its *base* (what it held when the iteration began, durable by the
//! campaign's own `sync`), or a version written in this iteration, and never one older than its
//! *durable* version (the last version acknowledged before a completed `fsync` of its file).

use serde::Serialize;
use untorn_logic::unit::UnitState;

/// The record of one unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitRecord {
    /// The version the unit held when the iteration began (0: never written).
    pub base: u64,
    /// The newest version acknowledged before a completed `fsync` (at least `base`).
    pub durable: u64,
    /// The newest version acknowledged.
    pub acked: u64,
    /// The versions issued in this iteration, `first..=last` (none when `first` is 0).
    pub first: u64,
    pub last: u64,
    /// The newest version ever issued.
    pub newest: u64,
}

impl UnitRecord {
    /// The version of the next write of this unit; call before issuing it.
    pub fn issue(&mut self) -> u64 {
        self.newest += 1;
        if self.first == 0 {
            self.first = self.newest;
        }
        self.last = self.newest;
        self.newest
    }

    /// Whether a unit that shows version `v` shows a write the campaign made.
    pub fn allowed(&self, v: u64) -> bool {
        v == self.base || (self.first != 0 && (self.first..=self.last).contains(&v))
    }

    /// The unit now durably holds `v` (0 for the initial content), as a new iteration begins.
    fn rebase(&mut self, v: u64) {
        *self = Self {
            base: v,
            durable: v,
            acked: v,
            first: 0,
            last: 0,
            newest: self.newest.max(v),
        };
    }
}

/// How writes reach a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteWay {
    /// `pwritev2(RWF_ATOMIC)` on a file in mode off.
    RwfAtomic,
    /// Plain `pwrite` on a file in writethrough mode (set by the mode ioctl).
    Writethrough,
    /// Plain `pwrite` on a file in mode off: ordinary buffered writes.
    Buffered,
}

/// The record of one file.
#[derive(Clone, Debug)]
pub struct FileRecord {
    /// The file's identity; its units carry `id << 32 | index` as their unit number, so that a
    /// unit of another file or place reads as corrupt.
    pub id: u64,
    pub unit_size: usize,
    pub way: WriteWay,
    /// The names the file may have after a cut: the first is the one in the directory at the
    /// last completed directory `fsync` (or at the start of the iteration), the last the current.
    pub names: Vec<String>,
    /// Whether the file's name is durable (it must exist after a cut).
    pub name_durable: bool,
    /// A directory `fsync` after the last rename or creation returned success only once the
    /// power was off, so its success proves nothing (see [`FileRecord::name_sync_unproven`]).
    pub name_sync_unproven: bool,
    pub units: Vec<UnitRecord>,
    /// The size in units, as acknowledged.
    pub size: u64,
    /// The size in units at the last completed `fsync`.
    pub durable_size: u64,
    /// The largest size in units the file may have (an extension may have failed half way).
    pub max_size: u64,
}

impl FileRecord {
    /// A new file, not yet created.
    pub fn new(id: u64, name: String, unit_size: usize, way: WriteWay) -> Self {
        Self {
            id,
            unit_size,
            way,
            names: vec![name],
            name_durable: false,
            name_sync_unproven: false,
            units: Vec::new(),
            size: 0,
            durable_size: 0,
            max_size: 0,
        }
    }

    /// The unit number a unit's sectors carry.
    pub fn tag(&self, index: u64) -> u64 {
        self.id << 32 | index
    }

    /// The current name.
    pub fn name(&self) -> &str {
        self.names.last().map_or("", String::as_str)
    }

    /// The record of unit `index`, grown as needed.
    pub fn unit(&mut self, index: u64) -> &mut UnitRecord {
        let i = index as usize;
        if self.units.len() <= i {
            self.units.resize(i + 1, UnitRecord::default());
        }
        &mut self.units[i]
    }

    /// A write of unit `index` at `version` returned: it was acknowledged if `ok`.
    pub fn written(&mut self, index: u64, version: u64, ok: bool) {
        self.max_size = self.max_size.max(index + 1);
        if ok {
            let unit = self.unit(index);
            unit.acked = unit.acked.max(version);
            self.size = self.size.max(index + 1);
        }
    }

    /// A write of unit `index` at `version` with `RWF_DSYNC` was acknowledged: it is durable at
    /// once (raw mode: a `REQ_FUA` write, or written back and flushed before the call returned).
    pub fn written_durable(&mut self, index: u64, version: u64) {
        self.written(index, version, true);
        let unit = self.unit(index);
        unit.durable = unit.durable.max(version);
    }

    /// The file was extended to `size` units by `ftruncate` (possibly, if not `ok`).
    pub fn truncated_up(&mut self, size: u64, ok: bool) {
        self.max_size = self.max_size.max(size);
        if ok {
            self.size = self.size.max(size);
        }
    }

    /// An `fsync` of the file completed: what was acknowledged is durable.
    pub fn synced(&mut self) {
        for unit in &mut self.units {
            unit.durable = unit.acked;
        }
        self.durable_size = self.size;
    }

    /// A rename to `name` was tried; the file may have either name until a directory `fsync`.
    pub fn renamed(&mut self, name: String) {
        self.names.push(name);
    }

    /// A directory `fsync` completed after the file's last rename or creation returned.
    pub fn name_synced(&mut self) {
        let current = self.name().to_string();
        self.names = vec![current];
        self.name_durable = true;
        self.name_sync_unproven = false;
    }

    /// A directory `fsync` returned success, but only after the power had gone off. XFS does
    /// that without writing anything: the log's shutdown unpins the directory, and
    /// `xfs_dir_fsync()` then finds nothing to force. The names stay as they were; the check
    /// counts whether the newest one was there.
    pub fn name_sync_unproven(&mut self) {
        if self.names.len() > 1 || !self.name_durable {
            self.name_sync_unproven = true;
        }
    }

    /// Whether a file found under `seen` (or not found) shows that an unproven directory
    /// `fsync` did not make its newest name durable.
    pub fn unproven_name_lost(&self, seen: Option<&str>) -> bool {
        self.name_sync_unproven && seen != Some(self.name())
    }
}

/// What one check found, summed over units and files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Units read back.
    pub units: u64,
    /// ... showing their initial content (zero, never written).
    pub initial: u64,
    /// ... whole, at a version the campaign wrote.
    pub whole: u64,
    /// ... torn: sectors of different writes.
    pub torn: u64,
    /// ... neither zero nor the unit's own sectors, or whole at a version never written there,
    /// or beyond any size the file had.
    pub corrupt: u64,
    /// Durable writes missing: a unit older than its durable version, a durable size shrunk.
    pub lost: u64,
    /// Files whose durable name is missing.
    pub files_lost: u64,
    /// Directory entries the campaign cannot account for (a name no file had, a file under two
    /// names).
    pub names_bad: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
        self.units += o.units;
        self.initial += o.initial;
        self.whole += o.whole;
        self.torn += o.torn;
        self.corrupt += o.corrupt;
        self.lost += o.lost;
        self.files_lost += o.files_lost;
        self.names_bad += o.names_bad;
    }
}

/// What a file showed after the cut: its name, and the state of each unit up to its size
/// (`size_ok`: the size is a whole number of units).
#[derive(Clone, Debug)]
pub struct Observed {
    pub name: String,
    pub units: Vec<UnitState>,
    pub size_ok: bool,
}

/// Judges one file against its record; `None` when the file is not there.
pub fn judge(file: &FileRecord, seen: Option<&Observed>) -> Tally {
    let mut t = Tally::default();
    let Some(seen) = seen else {
        if file.name_durable {
            t.files_lost += 1;
            t.lost += file.units.iter().filter(|u| u.durable > 0).count() as u64;
        }
        return t;
    };
    if !file.names.contains(&seen.name) {
        t.names_bad += 1;
    }
    if !seen.size_ok {
        // The size ends inside a unit: an extending write reached the disk in part (buffered
        // writeback extends a file a block at a time), which is a tear of that write.
        t.torn += 1;
    }
    if seen.units.len() as u64 > file.max_size.max(file.units.len() as u64) {
        t.corrupt += 1;
    }
    if (seen.units.len() as u64) < file.durable_size {
        // The durable size shrank (units below it read as initial, and count again as lost if
        // they held durable data).
        t.lost += 1;
    }
    let none = UnitRecord::default();
    let count = seen.units.len().max(file.units.len());
    for i in 0..count {
        let record = file.units.get(i).unwrap_or(&none);
        let state = seen.units.get(i).copied().unwrap_or(UnitState::Initial);
        t.units += 1;
        match state {
            UnitState::Initial => {
                t.initial += 1;
                // The durable version is at least the base, which the campaign's own sync made
                // durable when the iteration began.
                if record.durable > 0 {
                    t.lost += 1;
                }
            }
            UnitState::Whole(v) => {
                if !record.allowed(v) {
                    t.corrupt += 1;
                } else if v < record.durable {
                    t.lost += 1;
                } else {
                    t.whole += 1;
                }
            }
            UnitState::Torn { .. } => t.torn += 1,
            UnitState::Corrupt { .. } => t.corrupt += 1,
        }
    }
    t
}

/// What to do with a file after its check: the version each unit holds from now on (0:
/// initial), and the units to rewrite at a new version `(index, version)` because they showed
/// no version the record allows (torn, corrupt, a foreign version).
pub fn repair_plan(file: &mut FileRecord, seen: &[UnitState]) -> (Vec<u64>, Vec<(u64, u64)>) {
    let mut versions = Vec::new();
    let mut repair = Vec::new();
    for (u, state) in seen.iter().enumerate() {
        match state {
            UnitState::Initial => versions.push(0),
            UnitState::Whole(v) if file.units.get(u).is_some_and(|r| r.allowed(*v)) => {
                versions.push(*v)
            }
            _ => {
                let v = file.unit(u as u64).issue();
                repair.push((u as u64, v));
                versions.push(v);
            }
        }
    }
    (versions, repair)
}

/// After a check, the file as found becomes the base of the next iteration (the campaign
/// repairs torn and corrupt units and syncs everything first). `versions` is the version each
/// unit now durably holds (0: initial).
pub fn rebase(file: &mut FileRecord, name: String, versions: &[u64]) {
    file.units.truncate(versions.len());
    for (i, &v) in versions.iter().enumerate() {
        file.unit(i as u64).rebase(v);
    }
    let size = versions.len() as u64;
    file.size = size;
    file.durable_size = size;
    file.max_size = size;
    file.names = vec![name];
    file.name_durable = true;
    file.name_sync_unproven = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> FileRecord {
        FileRecord::new(3, "f3".into(), 8192, WriteWay::RwfAtomic)
    }

    fn seen(units: Vec<UnitState>) -> Observed {
        Observed {
            name: "f3".into(),
            units,
            size_ok: true,
        }
    }

    #[test]
    fn unit_tags_name_the_file() {
        assert_eq!(file().tag(5), 3 << 32 | 5);
    }

    #[test]
    fn acknowledged_but_not_synced_may_be_lost() {
        let mut f = file();
        let v = f.unit(0).issue();
        f.written(0, v, true);
        // Not synced: old content, or the new version, are both fine.
        for state in [UnitState::Initial, UnitState::Whole(v)] {
            let t = judge(&f, Some(&seen(vec![state])));
            assert_eq!((t.lost, t.torn, t.corrupt), (0, 0, 0), "{state:?}");
        }
    }

    #[test]
    fn synced_writes_must_survive() {
        let mut f = file();
        let v1 = f.unit(0).issue();
        f.written(0, v1, true);
        f.synced();
        let v2 = f.unit(0).issue();
        f.written(0, v2, false);
        assert_eq!(judge(&f, Some(&seen(vec![UnitState::Whole(v1)]))).lost, 0);
        assert_eq!(judge(&f, Some(&seen(vec![UnitState::Whole(v2)]))).lost, 0);
        assert_eq!(judge(&f, Some(&seen(vec![UnitState::Initial]))).lost, 1);
        // A durable size shrunk is a loss too.
        assert_eq!(judge(&f, Some(&seen(vec![]))).lost, 2);
    }

    #[test]
    fn torn_corrupt_and_foreign_versions_are_counted() {
        let mut f = file();
        let v = f.unit(0).issue();
        f.written(0, v, true);
        let torn = UnitState::Torn {
            oldest: 0,
            newest: v,
        };
        assert_eq!(judge(&f, Some(&seen(vec![torn]))).torn, 1);
        let t = judge(&f, Some(&seen(vec![UnitState::Whole(v + 1)])));
        assert_eq!((t.corrupt, t.whole), (1, 0));
        let t = judge(&f, Some(&seen(vec![UnitState::Corrupt { sector: 2 }])));
        assert_eq!(t.corrupt, 1);
        // A unit beyond any size the file had.
        let t = judge(
            &f,
            Some(&seen(vec![UnitState::Whole(v), UnitState::Initial])),
        );
        assert_eq!(t.corrupt, 1);
        // A size inside a unit: an extending write that reached the disk in part.
        let t = judge(
            &f,
            Some(&Observed {
                size_ok: false,
                ..seen(vec![UnitState::Whole(v)])
            }),
        );
        assert_eq!((t.torn, t.corrupt), (1, 0));
    }

    #[test]
    fn names_follow_renames_and_directory_syncs() {
        let mut f = file();
        assert_eq!(judge(&f, None), Tally::default(), "never durably created");
        f.name_synced();
        f.renamed("f3.1".into());
        let at = |name: &str| Observed {
            name: name.into(),
            units: vec![],
            size_ok: true,
        };
        assert_eq!(judge(&f, Some(&at("f3"))).names_bad, 0);
        assert_eq!(judge(&f, Some(&at("f3.1"))).names_bad, 0);
        f.name_synced();
        assert_eq!(judge(&f, Some(&at("f3"))).names_bad, 1);
        assert_eq!(judge(&f, None).files_lost, 1);
    }

    #[test]
    fn a_directory_sync_acknowledged_after_the_cut_proves_nothing() {
        let mut f = file();
        f.name_synced();
        f.renamed("f3.1".into());
        f.name_sync_unproven();
        // Either name is allowed, and the check can tell which one the cut left.
        let at = |name: &str| Observed {
            name: name.into(),
            units: vec![],
            size_ok: true,
        };
        assert_eq!(judge(&f, Some(&at("f3"))), Tally::default());
        assert_eq!(judge(&f, Some(&at("f3.1"))), Tally::default());
        assert!(f.unproven_name_lost(Some("f3")));
        assert!(!f.unproven_name_lost(Some("f3.1")));
        // A proven sync later settles it.
        f.name_synced();
        assert!(!f.unproven_name_lost(Some("f3")));
        // Nothing to prove: the name was already durable.
        f.name_sync_unproven();
        assert!(!f.unproven_name_lost(Some("f3")));
    }

    #[test]
    fn a_dsync_write_is_durable_at_once() {
        let mut f = file();
        let v1 = f.unit(0).issue();
        f.written_durable(0, v1);
        let v2 = f.unit(0).issue();
        f.written(0, v2, true);
        assert_eq!((f.units[0].durable, f.units[0].acked), (v1, v2));
        assert_eq!(judge(&f, Some(&seen(vec![UnitState::Initial]))).lost, 1);
        assert_eq!(judge(&f, Some(&seen(vec![UnitState::Whole(v1)]))).whole, 1);
        assert_eq!(judge(&f, Some(&seen(vec![UnitState::Whole(v2)]))).whole, 1);
        // An fsync later keeps the newest acknowledged; a DSYNC write never lowers it.
        f.synced();
        let v3 = f.unit(1).issue();
        f.written_durable(1, v3);
        assert_eq!((f.units[0].durable, f.units[1].durable), (v2, v3));
    }

    #[test]
    fn repairs_take_new_versions_and_keep_what_is_allowed() {
        let mut f = file();
        let v1 = f.unit(0).issue();
        f.written(0, v1, true);
        let v2 = f.unit(1).issue();
        f.written(1, v2, true);
        let seen = [
            UnitState::Whole(v1),
            UnitState::Torn {
                oldest: 0,
                newest: v2,
            },
            UnitState::Initial,
            UnitState::Whole(99),
        ];
        let (versions, repair) = repair_plan(&mut f, &seen);
        assert_eq!(repair.len(), 2);
        let (r1, r3) = (repair[0], repair[1]);
        assert_eq!((r1.0, r3.0), (1, 3));
        assert!(r1.1 > v2, "a new version, never one written before");
        assert_eq!(versions, vec![v1, r1.1, 0, r3.1]);
        rebase(&mut f, "f3".into(), &versions);
        assert_eq!(judge(&f, Some(&seen_all(&versions))).whole, 3);
    }

    fn seen_all(versions: &[u64]) -> Observed {
        seen(
            versions
                .iter()
                .map(|&v| {
                    if v == 0 {
                        UnitState::Initial
                    } else {
                        UnitState::Whole(v)
                    }
                })
                .collect(),
        )
    }

    #[test]
    fn the_base_survives_and_versions_only_grow() {
        let mut f = file();
        let v1 = f.unit(0).issue();
        let v2 = f.unit(0).issue();
        f.written(0, v2, true);
        rebase(&mut f, "f3".into(), &[v1]);
        assert_eq!(judge(&f, Some(&seen(vec![UnitState::Whole(v1)]))).whole, 1);
        assert_eq!(judge(&f, Some(&seen(vec![UnitState::Initial]))).lost, 1);
        // v2 was lost in the cut: it can no longer show up.
        assert_eq!(
            judge(&f, Some(&seen(vec![UnitState::Whole(v2)]))).corrupt,
            1
        );
        assert!(f.unit(0).issue() > v2);
    }
}
