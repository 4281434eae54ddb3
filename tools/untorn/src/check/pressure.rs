// SPDX-License-Identifier: GPL-2.0

//! Memory pressure: more data is written through untorn, across many files, than the guest
//! has free memory, so that its page cache is written back and reclaimed while writes go on;
//! then everything is read back and compared.

use super::{
    stacking::{first_difference, Stack},
    Env, Watchdog,
};
use crate::{exercise::pattern, guest, sys};
use anyhow::{ensure, Context, Result};
use std::{
    fs::{self, File},
    io::Write,
    os::unix::fs::FileExt,
    path::Path,
    time::Duration,
};

const MIB: u64 = 1 << 20;
/// At most this much data (the scsi_debug disk holds 512 MiB, in guest memory).
const MAX_DATA: u64 = 160 * MIB;
/// Files of about this size; each a little longer, so that no size is page-aligned.
const FILE_SIZE: u64 = 4 * MIB;
const CHUNK: usize = MIB as usize;

/// A field of /proc/meminfo, in bytes.
fn meminfo(field: &str) -> Result<u64> {
    let text = fs::read_to_string("/proc/meminfo")?;
    let line = text
        .lines()
        .find(|l| l.split(':').next() == Some(field))
        .with_context(|| format!("no {field} in /proc/meminfo"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("bad line {line:?}"))?
        .parse()?;
    Ok(kb * 1024)
}

fn memory_line() -> String {
    let mut parts = Vec::new();
    for field in ["MemFree", "MemAvailable", "Cached", "Dirty", "Writeback"] {
        if let Ok(bytes) = meminfo(field) {
            parts.push(format!("{field} {} MiB", bytes / MIB));
        }
    }
    parts.join(", ")
}

fn file_size(i: u64) -> u64 {
    FILE_SIZE + 1 + (i * 4099) % 8192
}

pub fn more_data_than_free_memory(_: &Env, stack: &mut Stack) -> Result<()> {
    let dir = stack.top().join("pressure");
    fs::create_dir(&dir)?;
    let lower = sys::statfs(stack.lower_dir())?;
    let free_disk = lower.f_bavail * lower.f_bsize as u64;
    let total = MAX_DATA.min(free_disk / 4 * 3);
    let files = total / (FILE_SIZE + 8192);
    ensure!(
        files >= 16,
        "only {} MiB free on the lower",
        free_disk / MIB
    );
    let total: u64 = (0..files).map(file_size).sum();

    // Leave the kernel less than what will be written (5/8 of it): the rest must be reclaimed
    // while writing goes on.
    let available = meminfo("MemAvailable")?;
    let headroom = total / 8 * 5;
    let balloon = if available > headroom + 64 * MIB {
        Some(sys::Balloon::inflate((available - headroom) as usize).context("balloon")?)
    } else {
        None
    };
    let free = meminfo("MemAvailable")?;
    println!(
        "#   writing {} MiB in {files} files; balloon {} MiB; {}",
        total / MIB,
        balloon.as_ref().map_or(0, |b| b.len() as u64 / MIB),
        memory_line()
    );
    ensure!(
        total > free,
        "{} MiB of data is not more than the {} MiB available",
        total / MIB,
        free / MIB
    );

    let seed = |i: u64| 0x5052_4553 ^ (i << 32);
    let path = |i: u64| dir.join(format!("p{i:03}"));
    let mut chunk = Vec::with_capacity(CHUNK);
    let fill = |i: u64, offset: u64, len: usize, chunk: &mut Vec<u8>| {
        // The content of file i at offset: a pattern per 1 MiB chunk.
        *chunk = pattern(seed(i) + offset / CHUNK as u64, len);
    };
    // Under TCG a 1 MiB chunk takes well under a second; minutes without one is a hang.
    let watchdog = Watchdog::start("the memory pressure test", Duration::from_secs(180));
    for i in 0..files {
        let mut f = File::create(path(i))?;
        let size = file_size(i);
        let mut offset = 0;
        while offset < size {
            let len = (size - offset).min(CHUNK as u64) as usize;
            fill(i, offset, len, &mut chunk);
            f.write_all(&chunk)
                .with_context(|| format!("write p{i:03} at {offset}"))?;
            watchdog.tick();
            offset += len as u64;
        }
        if i % 16 == 15 {
            println!("#   after {} files: {}", i + 1, memory_line());
        }
    }
    sys::syncfs(&File::open(&dir)?)?;
    // Read back from the lower (through untorn's fresh page cache), still under pressure.
    guest::drop_caches()?;
    println!("#   written and synced; {}", memory_line());
    let mut got = vec![0u8; CHUNK];
    for i in 0..files {
        let f = File::open(path(i))?;
        let size = file_size(i);
        ensure!(
            f.metadata()?.len() == size,
            "p{i:03}: size {}, expected {size}",
            f.metadata()?.len()
        );
        let low = stack.lower_dir().join("pressure").join(format!("p{i:03}"));
        ensure!(
            fs::metadata(&low)?.len() == size,
            "p{i:03}: lower size after syncfs"
        );
        let mut offset = 0;
        while offset < size {
            let len = (size - offset).min(CHUNK as u64) as usize;
            f.read_exact_at(&mut got[..len], offset)
                .with_context(|| format!("read p{i:03} at {offset}"))?;
            fill(i, offset, len, &mut chunk);
            watchdog.tick();
            if let Some(at) = first_difference(&got[..len], &chunk) {
                anyhow::bail!("p{i:03} differs at offset {}", offset + at as u64);
            }
            offset += len as u64;
        }
    }
    drop(watchdog);
    println!("#   read back and compared; {}", memory_line());
    drop(balloon);
    remove_all(&dir)
}

fn remove_all(dir: &Path) -> Result<()> {
    fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))
}
