// SPDX-License-Identifier: GPL-2.0

//! `untorn`: check, crash-test and benchmark untorn writes.
//!
//! Most subcommands run inside the test guest (see `tools/testing/vm-run`), as root, against
//! the modules built from this repository.

mod bench;
mod check;
mod crash;
mod exercise;
mod guest;
mod limits;
mod mode;
mod pgbench;
mod plot;
mod postgres;
mod progress;
mod sys;
mod table;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::{io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

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
        /// Run the stacking tests directly on the lower XFS/ext4 instead of through untorn
        /// (leaving out those of untorn itself), to check the tests against the real thing.
        #[arg(long)]
        reference: bool,
        /// Also run the memory-pressure tests (slow; `make pressure`).
        #[arg(long)]
        pressure: bool,
    },
    /// Show or set the writethrough mode of files on an untorn mount.
    ///
    /// Without a flag, shows each file's persistent mode and its effective mode (after the
    /// mount's writethrough= option). Setting needs the file's owner or CAP_FOWNER.
    Mode {
        /// Write the files through (persistent: stored on the lower file).
        #[arg(long, conflicts_with = "off")]
        writethrough: bool,
        /// Back to ordinary buffered writes.
        #[arg(long)]
        off: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Files on an untorn mount.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Random operations on a few files through untorn, every read checked against a model of
    /// their content; exits non-zero on the first mismatch.
    Exercise {
        /// The lower directory untorn stacks over (its files exercise-N are overwritten).
        #[arg(long, required_unless_present = "scratch")]
        lower: Option<PathBuf>,
        /// Where to mount untorn.
        #[arg(long, required_unless_present_any = ["scratch", "no_mount"])]
        mountpoint: Option<PathBuf>,
        /// Make a fresh filesystem of this type on the scsi_debug disk (destroying its
        /// content) and use a directory on it as the lower, a scratch mount point for untorn.
        #[arg(long, value_enum, conflicts_with_all = ["lower", "mountpoint"])]
        scratch: Option<guest::FsType>,
        /// The seed of the operation sequence (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// How long to run, e.g. 60s, 30m, 2h.
        #[arg(long, default_value = "60s", value_parser = exercise::parse_duration)]
        duration: Duration,
        /// Stop after this many operations instead (to replay a failure).
        #[arg(long)]
        ops: Option<u64>,
        /// How many files.
        #[arg(long, default_value_t = 8)]
        files: usize,
        /// The largest size a file may reach, e.g. 4MiB.
        #[arg(long, default_value = "4MiB", value_parser = exercise::parse_size)]
        max_size: u64,
        /// untorn mount options, e.g. writethrough=all.
        #[arg(long, default_value = "")]
        options: String,
        /// Work directly in the lower directory, without untorn (to check the exerciser).
        #[arg(long)]
        no_mount: bool,
        /// Also set files' writethrough mode and make buffered RWF_ATOMIC writes (checking
        /// each one's outcome against the limits statx reports).
        #[arg(long)]
        atomic_ops: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Where the built modules are, to load untorn.ko when it is not loaded yet
        /// (default: $UNTORN_MODULES, set by vm-run).
        #[arg(long, env = "UNTORN_MODULES")]
        modules: Option<PathBuf>,
    },
    /// The power-cut campaign: writes through untorn on a tornblk device, cuts the power at
    /// random, and checks that no unit is torn and nothing durable is lost; with two negative
    /// controls that must show torn units. Exits non-zero when untorn shows a tear or a loss, or
    /// a control shows no tear.
    Crash {
        /// Lower filesystems, and raw mode (untorn mounted on the device itself); each gets an
        /// equal share of the cuts.
        #[arg(long = "lower", value_delimiter = ',', default_value = "xfs,ext4,raw")]
        lowers: Vec<guest::Lower>,
        /// Modes to run (default: untorn and both controls).
        #[arg(
            long = "mode",
            value_delimiter = ',',
            default_value = "untorn,buffered,no-atomic"
        )]
        modes: Vec<crash::Mode>,
        /// Power cuts in untorn mode, over all lowers (raw mode included, unless --raw-cuts is
        /// given).
        #[arg(long, default_value_t = 100)]
        cuts: u64,
        /// Power cuts in untorn mode in raw mode, instead of its share of --cuts.
        #[arg(long)]
        raw_cuts: Option<u64>,
        /// The most cuts a control makes on each lower; it stops at the first that shows torn
        /// units.
        #[arg(long, default_value_t = 20)]
        control_cuts: u64,
        /// The seed (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// A cut comes after 1 to this many writes reach the device.
        #[arg(long, default_value_t = 64)]
        max_writes: u32,
        /// Make a fresh filesystem every this many cuts (raw mode: zero the regions again).
        #[arg(long, default_value_t = 50)]
        mkfs_every: u64,
        /// Check the lower with xfs_repair -n / e2fsck -fn every this many cuts (and after the
        /// last); raw mode has no lower to check.
        #[arg(long, default_value_t = 10)]
        fsck_every: u64,
        /// Writer threads (each with a directory and files of its own; raw mode: regions of
        /// data of its own).
        #[arg(long, default_value_t = 2)]
        writers: usize,
        /// Files per writer (raw mode: regions per writer).
        #[arg(long, default_value_t = 3)]
        files: usize,
        /// Let tornblk reorder unflushed writes at a cut.
        #[arg(long)]
        reorder: bool,
        /// Print JSON instead of the table (the last line is still printed, on stderr).
        #[arg(long)]
        json: bool,
        /// Where the built modules are (default: $UNTORN_MODULES, set by vm-run).
        #[arg(long, env = "UNTORN_MODULES")]
        modules: PathBuf,
    },
    /// The PostgreSQL crash test: pgbench with full_page_writes=off on untorn over XFS on a
    /// tornblk device, power cut at random, then WAL replay, pg_amcheck, pg_checksums and the
    /// count of committed transactions; with the control on plain XFS, which must show
    /// corruption. Exits non-zero when untorn shows anything, or the control shows nothing.
    CrashPostgres(crash::postgres::Options),
    /// Benchmark untorn writethrough against the alternatives (O_DIRECT+RWF_ATOMIC,
    /// buffered+fdatasync, doublewrite, plain buffered) on the same device and lower, in one
    /// run; prints a table and writes a report directory. Makes fresh filesystems on the device.
    Bench(bench::Options),
    /// What PostgreSQL gains from untorn: pgbench on XFS with full_page_writes on, on XFS with
    /// it off, and on untorn over XFS with it off, the same data and settings, in one run;
    /// prints a table and writes a report directory. Makes a fresh XFS on the scsi_debug disk
    /// and needs $UNTORN_POSTGRES (tools/testing/build-postgres).
    Pgbench(pgbench::Options),
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
            reference,
            pressure,
        } => {
            let env = check::Env::new(modules, reference, pressure);
            if list {
                for test in check::all_tests(&env)? {
                    println!("{}", test.name);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let summary = check::run(&env, filter.as_deref())?;
            println!(
                "# {} passed, {} failed, {} skipped",
                summary.passed, summary.failed, summary.skipped
            );
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Mode {
            writethrough,
            off,
            json,
            files,
        } => {
            let set = match (writethrough, off) {
                (true, _) => Some(untorn_logic::mount_options::FileMode::Writethrough),
                (_, true) => Some(untorn_logic::mount_options::FileMode::Off),
                _ => None,
            };
            mode::run(&files, set, json)
        }
        Command::Exercise {
            lower,
            mountpoint,
            scratch,
            seed,
            duration,
            ops,
            files,
            max_size,
            options,
            no_mount,
            atomic_ops,
            json,
            modules,
        } => {
            let options = exercise::Options {
                seed: seed.unwrap_or_else(clock_seed),
                duration,
                max_ops: ops,
                files,
                max_size,
                mount: !no_mount,
                mount_options: options,
                drop_caches: true,
                atomic_ops,
            };
            // Held until the end: the scratch filesystem and the module are undone on drop.
            let mut scratch_mount = None;
            let (lower, mountpoint) = match (scratch, lower) {
                (Some(fs_type), _) => {
                    let mounted = guest::Mounted::fresh(fs_type, &guest::scsi_debug_disk()?)?;
                    let lower = mounted.path().join("lower");
                    std::fs::create_dir(&lower)?;
                    scratch_mount = Some(mounted);
                    (lower, guest::scratch_dir("exercise")?)
                }
                (None, Some(lower)) => (lower, mountpoint.unwrap_or_default()),
                (None, None) => anyhow::bail!("--lower or --scratch is needed"),
            };
            let _module = if options.mount && !guest::filesystem_registered("untorn") {
                let modules = modules
                    .context("untorn is not loaded and no --modules (UNTORN_MODULES) to load it")?;
                Some(check::load_untorn(&modules)?)
            } else {
                None
            };
            let progress = std::io::stderr().is_terminal() && !json;
            let summary = exercise::run(&lower, &mountpoint, &options, progress);
            if scratch_mount.is_some() {
                let _ = std::fs::remove_dir(&mountpoint);
            }
            let summary = summary?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("{}", summary.line());
            }
            if summary.passed() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{}", summary.failure_report());
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Crash {
            lowers,
            modes,
            cuts,
            raw_cuts,
            control_cuts,
            seed,
            max_writes,
            mkfs_every,
            fsck_every,
            writers,
            files,
            reorder,
            json,
            modules,
        } => {
            let seed = seed.unwrap_or_else(clock_seed);
            eprintln!("crash: seed {seed}");
            let options = crash::Options {
                lowers,
                modes,
                cuts,
                raw_cuts,
                control_cuts,
                seed,
                max_writes,
                mkfs_every,
                fsck_every,
                writers,
                files,
                reorder,
                modules,
                progress: !json,
            };
            run_crash(&options, json)
        }
        Command::CrashPostgres(options) => {
            let seed = options.seed.unwrap_or_else(clock_seed);
            eprintln!("crash-postgres: seed {seed}");
            let report = crash::postgres::run(&options, seed)?;
            print_crash_report(
                &report,
                report.text(),
                report.last_line(),
                report.passed,
                options.json,
            )
        }
        Command::Bench(mut options) => {
            options.prepare()?;
            let (report, json) = (options.output.report.clone(), options.output.json);
            if let Some(dir) = &report {
                // Now rather than after minutes of measuring.
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let results = bench::run(&options)?;
            if let Some(dir) = &report {
                bench::report::write(dir, &results)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", bench::report::text(&results));
            }
            let failed = results.results.iter().filter(|r| r.error.is_some()).count();
            if failed > 0 {
                eprintln!("bench: {failed} strategy runs failed (see the table)");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pgbench(options) => run_pgbench(options),
    }
}

/// Runs `untorn pgbench` and prints its table (or JSON); writes the report directory.
fn run_pgbench(mut options: pgbench::Options) -> Result<ExitCode> {
    options.prepare()?;
    if let Some(dir) = &options.output.report {
        // Now rather than after minutes of measuring.
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let results = pgbench::run(&options)?;
    if let Some(dir) = &options.output.report {
        pgbench::report::write(dir, &results)?;
    }
    if options.output.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", pgbench::report::text(&results));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `untorn crash` and prints its report.
fn run_crash(options: &crash::Options, json: bool) -> Result<ExitCode> {
    let report = crash::run(options)?;
    print_crash_report(
        &report,
        report.text(),
        report.last_line(),
        report.passed,
        json,
    )
}

/// Prints a crash test's report (as JSON, with its last line on standard error, or as text);
/// the exit status is its verdict.
fn print_crash_report(
    report: &impl serde::Serialize,
    text: String,
    last_line: String,
    passed: bool,
    json: bool,
) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        eprintln!("{last_line}");
    } else {
        print!("{text}");
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A seed from the clock, for runs that do not name one (the summary prints it).
fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    untorn_logic::rng::mix64(now.as_secs() ^ u64::from(now.subsec_nanos()) << 32)
}
