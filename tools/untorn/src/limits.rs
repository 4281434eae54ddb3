// SPDX-License-Identifier: GPL-2.0

//! Atomic write limits of devices (sysfs) and of files on them (statx).

use crate::{
    guest::{FsType, Mounted},
    sys,
};
use anyhow::{Context, Result};
use serde::Serialize;
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

/// What `/sys/block/<disk>/queue/atomic_write_*_bytes` says (0: unsupported).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DeviceLimits {
    pub max_bytes: u64,
    pub unit_min_bytes: u64,
    pub unit_max_bytes: u64,
    pub boundary_bytes: u64,
}

impl DeviceLimits {
    /// Reads the limits of a whole disk such as `/dev/sda`.
    pub fn of_disk(device: &Path) -> Result<Self> {
        let name = device
            .file_name()
            .with_context(|| format!("not a device path: {}", device.display()))?;
        let queue = Path::new("/sys/block").join(name).join("queue");
        let read = |attr: &str| -> Result<u64> {
            let path = queue.join(format!("atomic_write_{attr}_bytes"));
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            text.trim()
                .parse()
                .with_context(|| format!("{} is not a number: {text:?}", path.display()))
        };
        Ok(Self {
            max_bytes: read("max")?,
            unit_min_bytes: read("unit_min")?,
            unit_max_bytes: read("unit_max")?,
            boundary_bytes: read("boundary")?,
        })
    }
}

/// What `statx(STATX_WRITE_ATOMIC)` says of a file.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FileLimits {
    /// The kernel filled in the atomic fields (`STATX_WRITE_ATOMIC` in `stx_mask`).
    pub reported: bool,
    /// `STATX_ATTR_WRITE_ATOMIC` is set.
    pub attr_write_atomic: bool,
    pub unit_min: u32,
    pub unit_max: u32,
    pub unit_max_opt: u32,
    pub segments_max: u32,
}

impl FileLimits {
    /// Reads the limits of the file at `path`.
    pub fn of_file(path: &Path) -> Result<Self> {
        let stx = sys::statx(path, sys::STATX_WRITE_ATOMIC)
            .with_context(|| format!("statx {}", path.display()))?;
        Ok(Self {
            reported: stx.stx_mask & sys::STATX_WRITE_ATOMIC != 0,
            attr_write_atomic: stx.stx_attributes & sys::STATX_ATTR_WRITE_ATOMIC != 0,
            unit_min: stx.stx_atomic_write_unit_min,
            unit_max: stx.stx_atomic_write_unit_max,
            unit_max_opt: stx.stx_atomic_write_unit_max_opt,
            segments_max: stx.stx_atomic_write_segments_max,
        })
    }

    /// Makes a fresh filesystem on `device`, creates a file on it, and reads that file's limits.
    pub fn of_fresh_file(fs_type: FsType, device: &Path) -> Result<Self> {
        let mounted = Mounted::fresh(fs_type, device)?;
        let path = mounted.path().join("limits-probe");
        let mut file = fs::File::create(&path)?;
        file.write_all(&[0u8; 65536])?;
        file.sync_all()?;
        Self::of_file(&path)
    }
}

/// One row of `untorn limits`.
#[derive(Debug, Serialize)]
pub struct LimitsRow {
    pub device: PathBuf,
    pub device_limits: DeviceLimits,
    pub fs: Option<FsType>,
    pub file_limits: Option<FileLimits>,
}

/// Collects the rows for `devices`; with `fs_types`, also the limits of a file on a fresh
/// filesystem of each type (which destroys the devices' content).
pub fn collect(devices: &[PathBuf], fs_types: &[FsType]) -> Result<Vec<LimitsRow>> {
    let mut rows = Vec::new();
    for device in devices {
        let device_limits = DeviceLimits::of_disk(device)?;
        if fs_types.is_empty() {
            rows.push(LimitsRow {
                device: device.clone(),
                device_limits,
                fs: None,
                file_limits: None,
            });
        }
        for &fs_type in fs_types {
            let file_limits = FileLimits::of_fresh_file(fs_type, device)
                .with_context(|| format!("{} on {}", fs_type.name(), device.display()))?;
            rows.push(LimitsRow {
                device: device.clone(),
                device_limits,
                fs: Some(fs_type),
                file_limits: Some(file_limits),
            });
        }
    }
    Ok(rows)
}

/// Formats the rows as a table for people.
pub fn table(rows: &[LimitsRow]) -> String {
    let mut cells = vec![vec![
        "device".to_string(),
        "sysfs unit_min".into(),
        "unit_max".into(),
        "max".into(),
        "boundary".into(),
        "fs".into(),
        "statx unit_min".into(),
        "unit_max".into(),
        "unit_max_opt".into(),
        "segments".into(),
        "ATTR_WRITE_ATOMIC".into(),
    ]];
    for row in rows {
        let d = &row.device_limits;
        let mut line = vec![
            row.device.display().to_string(),
            bytes(d.unit_min_bytes),
            bytes(d.unit_max_bytes),
            bytes(d.max_bytes),
            bytes(d.boundary_bytes),
        ];
        match (row.fs, &row.file_limits) {
            (Some(fs), Some(f)) => line.extend([
                fs.name().to_string(),
                bytes(f.unit_min.into()),
                bytes(f.unit_max.into()),
                bytes(f.unit_max_opt.into()),
                f.segments_max.to_string(),
                if f.attr_write_atomic { "yes" } else { "no" }.to_string(),
            ]),
            _ => line.extend(std::iter::repeat_n("-".to_string(), 6)),
        }
        cells.push(line);
    }
    crate::table::render(&cells)
}

/// A byte count the way people read limits: 4 KiB, 1 MiB, 512 B.
pub fn bytes(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn limits_read_in_the_largest_exact_unit() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(1536), "1536 B");
        assert_eq!(bytes(1 << 20), "1 MiB");
        assert_eq!(bytes(3 << 19), "1536 KiB");
    }
}
