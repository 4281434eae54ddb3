// SPDX-License-Identifier: GPL-2.0

//! `untorn`: check, crash-test and benchmark untorn writes.
//!
//! Most subcommands run inside the test guest (see `tools/testing/vm-run`), as root, against
//! the modules built from this repository.

mod check;
mod guest;
mod limits;
mod sys;
mod table;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the atomic write limits of block devices and of files on them.
    Limits {
        /// Devices to show (default: every SCSI, NVMe and tornblk disk).
        devices: Vec<PathBuf>,
        /// Also make a fresh filesystem of this type on each device and show the statx
        /// limits of a file on it. Destroys the devices' content.
        #[arg(long = "mkfs", value_delimiter = ',')]
        fs_types: Vec<guest::FsType>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the guest tests and report them as TAP.
    Check {
        /// Run only the tests whose names contain this.
        #[arg(long)]
        filter: Option<String>,
        /// Where the built modules are (default: $UNTORN_MODULES, set by vm-run).
        #[arg(long, env = "UNTORN_MODULES")]
        modules: PathBuf,
        /// List the tests instead of running them.
        #[arg(long)]
        list: bool,
    },
}

fn default_devices() -> Result<Vec<PathBuf>> {
    let mut devices = Vec::new();
    for entry in std::fs::read_dir("/sys/block").context("cannot list /sys/block")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if ["sd", "nvme", "tornblk"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            devices.push(PathBuf::from("/dev").join(name));
        }
    }
    devices.sort();
    Ok(devices)
}

fn main() -> ExitCode {
    // SAFETY: Called before any other thread exists; restoring the default SIGPIPE action makes
    // `untorn ... | head` end quietly, as C tools do, instead of panicking in `println!`.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("untorn: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Limits {
            devices,
            fs_types,
            json,
        } => {
            let devices = if devices.is_empty() {
                default_devices()?
            } else {
                devices
            };
            let rows = limits::collect(&devices, &fs_types)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", limits::table(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            filter,
            modules,
            list,
        } => {
            let env = check::Env {
                modules_dir: modules,
            };
            if list {
                for test in check::all_tests(&env)? {
                    println!("{}", test.name);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let summary = check::run(&env, filter.as_deref())?;
            println!("# {} passed, {} failed", summary.passed, summary.failed);
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
