// SPDX-License-Identifier: GPL-2.0

//! `untorn mode`: show or set the per-file writethrough mode with the ioctls of
//! `include/uapi/linux/untorn.h`.

use crate::sys;
use anyhow::Result;
use serde::Serialize;
use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    process::ExitCode,
};
use untorn_logic::{mount_options::FileMode, uapi::UntornMode};

/// One file's modes.
#[derive(Debug, Serialize)]
pub struct ModeRow {
    pub file: PathBuf,
    /// The persistent mode: `off` or `writethrough`.
    pub mode: String,
    /// The mode after the mount option (`writethrough=all|none|marked`).
    pub effective: String,
}

/// A mode as people read it.
fn mode_name(value: u32) -> String {
    match FileMode::from_u32(value) {
        Ok(FileMode::Off) => "off".into(),
        Ok(FileMode::Writethrough) => "writethrough".into(),
        Err(_) => format!("unknown ({value})"),
    }
}

/// What an ioctl's errno means here.
fn explain(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOTTY) => {
            ": not a regular file on an untorn mount, or an untorn module without the mode ioctls"
        }
        Some(libc::EPERM) => ": only the file's owner or a process with CAP_FOWNER may set it",
        Some(libc::EROFS) => ": the untorn mount is read-only",
        Some(libc::EOPNOTSUPP) => ": the lower filesystem does not support trusted.* xattrs",
        _ => "",
    }
}

fn error(path: &Path, what: &str, e: &io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: {what}: {}{}",
        path.display(),
        sys::describe(e),
        explain(e)
    )
}

/// Sets (if `set`) and then reads the mode of the file at `path`.
fn one(path: &Path, set: Option<FileMode>) -> Result<ModeRow> {
    // Read-only is enough, as for chattr; the ioctl checks ownership itself.
    let file = File::open(path).map_err(|e| error(path, "cannot open", &e))?;
    if let Some(mode) = set {
        let request = UntornMode {
            mode: mode.as_u32(),
            ..UntornMode::default()
        };
        sys::set_mode(&file, &request).map_err(|e| error(path, "UNTORN_IOC_SET_MODE", &e))?;
    }
    let got = sys::get_mode(&file).map_err(|e| error(path, "UNTORN_IOC_GET_MODE", &e))?;
    Ok(ModeRow {
        file: path.to_path_buf(),
        mode: mode_name(got.mode),
        effective: mode_name(got.effective),
    })
}

/// Formats the rows as a table.
pub fn table(rows: &[ModeRow]) -> String {
    let mut cells = vec![vec![
        "file".to_string(),
        "mode".to_string(),
        "effective".to_string(),
    ]];
    for row in rows {
        cells.push(vec![
            row.file.display().to_string(),
            row.mode.clone(),
            row.effective.clone(),
        ]);
    }
    crate::table::render(&cells)
}

/// `untorn mode [--writethrough|--off] [--json] FILE...`: every file is tried; the exit
/// status is non-zero if any failed (each failure is printed).
pub fn run(files: &[PathBuf], set: Option<FileMode>, json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    let mut failed = false;
    for path in files {
        match one(path, set) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("untorn: error: {e:#}");
                failed = true;
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if !rows.is_empty() {
        print!("{}", table(&rows));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_have_names() {
        assert_eq!(mode_name(0), "off");
        assert_eq!(mode_name(1), "writethrough");
        assert_eq!(mode_name(9), "unknown (9)");
    }

    #[test]
    fn a_file_elsewhere_gets_a_clear_enotty() {
        // A regular file outside untorn: its filesystem does not know the ioctl.
        let path = std::env::temp_dir().join(format!("untorn-mode-test-{}", std::process::id()));
        std::fs::write(&path, b"x").expect("write a scratch file");
        let result = one(&path, None);
        let _ = std::fs::remove_file(&path);
        let message = format!("{:#}", result.expect_err("not an untorn file"));
        assert!(message.contains("UNTORN_IOC_GET_MODE: ENOTTY"), "{message}");
        assert!(
            message.contains("not a regular file on an untorn mount"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let result = one(Path::new("/nonexistent/untorn-mode"), None);
        let message = format!("{:#}", result.expect_err("missing"));
        assert!(
            message.contains("/nonexistent/untorn-mode: cannot open: ENOENT"),
            "{message}"
        );
    }

    #[test]
    fn the_table_has_a_row_per_file() {
        let rows = [ModeRow {
            file: "/m/f".into(),
            mode: "writethrough".into(),
            effective: "off".into(),
        }];
        assert_eq!(
            table(&rows),
            "file  mode          effective\n----  ------------  ---------\n/m/f  writethrough  off\n"
        );
    }
}
