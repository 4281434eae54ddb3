// SPDX-License-Identifier: GPL-2.0

//! The PostgreSQL crash test (`untorn crash-postgres`, Documentation/dev-tools/crash.rst):
//! pgbench against a cluster with `full_page_writes=off` and data checksums on a tornblk
//! device; the power is cut at a random device write; then power on, WAL replay, and checks
//! that no page is corrupt and every acknowledged transaction is there:
//!
//! - the server starts (WAL replay reads every page it redoes, and fails on a bad checksum);
//! - pgbench's history has a row for each transaction pgbench counted, and at most one more
//!   per client (committed, but the answer lost in the cut), and the balances of accounts,
//!   tellers and branches all sum to the history's deltas;
//! - `pg_amcheck` (amcheck's `verify_heapam` and `bt_index_check` with `heapallindexed`) finds
//!   nothing;
//! - `pg_checksums --check`, offline, finds no bad page.
//!
//! Then the next run goes on from there. With the data directory on untorn over XFS (the
//! patched server writes its relation files through, each page one `REQ_ATOMIC` write) no cut
//! may show anything. The negative control puts the data directory on the XFS itself, with the
//! same settings: its pages are written back as plain writes, which the cut tears, and it must
//! show corruption; it stops at the first cut that does.

use super::DEVICE;
use crate::{
    check::{
        self,
        tornblk::TornDev,
        writethrough::{counters_file, read_counters_file},
    },
    guest::{self, FsType, LoadedModule, Sysctls},
    postgres::{copy_dir, Cluster, Install},
    progress::Progress,
};
use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// Where the data directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// On untorn over XFS, its relation files in writethrough (the patched server's default).
    Untorn,
    /// On the XFS itself: the negative control.
    PlainXfs,
}

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::Untorn => "untorn",
            Case::PlainXfs => "plain-xfs",
        }
    }
}

/// `untorn crash-postgres`'s options.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Power cuts with the data directory on untorn.
    #[arg(long, default_value_t = 20)]
    pub cuts: u64,
    /// The most cuts of the control (plain XFS); it stops at the first that shows corruption.
    #[arg(long, default_value_t = 10)]
    pub control_cuts: u64,
    /// The cases to run.
    #[arg(
        long = "case",
        value_delimiter = ',',
        default_value = "untorn,plain-xfs"
    )]
    pub cases: Vec<Case>,
    /// The seed (default: from the clock, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// A cut comes after 1 to this many writes reach the device.
    #[arg(long, default_value_t = 4000)]
    pub max_writes: u32,
    /// pgbench's scale factor (100 000 accounts each).
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// pgbench's clients.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the built modules are (default: $UNTORN_MODULES, set by vm-run).
    #[arg(long, env = "UNTORN_MODULES")]
    pub modules: PathBuf,
}

/// The server's settings in every case. Small shared buffers make backends and the background
/// writer write pages out all the time, and the test's own `CHECKPOINT` every second (besides
/// `checkpoint_timeout`) writes the rest back and fsyncs it: pages are written to the device
/// during the whole run, not only once a minute. `restart_after_crash=off`: after the cut, the
/// server stops instead of retrying its recovery on a dead device.
const SETTINGS: &str = "-c full_page_writes=off -c shared_buffers=2MB -c checkpoint_timeout=30s \
     -c max_wal_size=32MB -c min_wal_size=32MB -c bgwriter_delay=10ms \
     -c bgwriter_lru_maxpages=1000 -c restart_after_crash=off";
/// How often the test asks for a checkpoint while pgbench runs.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A run in which the armed cut has not come after this long is cut by hand.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// How long after pgbench's start the cut is armed.
const ARM_AFTER: Duration = Duration::from_secs(2);
/// How long pgbench may take to notice the dead server.
const PGBENCH_EXIT_LIMIT: Duration = Duration::from_secs(60);
/// The kernel writes dirty pages back after 1 s instead of 30 s (checked every 0.5 s): the
/// control's buffered pages reach the device during the run.
const DIRTY_SYSCTLS: [(&str, &str); 2] = [
    ("/proc/sys/vm/dirty_expire_centisecs", "100"),
    ("/proc/sys/vm/dirty_writeback_centisecs", "50"),
];
/// The configfs name of the device (`/dev/tornblkpgcrash`).
const DEVICE_NAME: &str = "pgcrash";

/// What a cut left behind that it must not have.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum Finding {
    /// The server did not come up: the lines of its log that say why.
    RecoveryFailed(String),
    /// A query of the checks failed (e.g. a page that does not verify).
    QueryFailed(String),
    /// `pg_amcheck` found corruption: its report.
    Amcheck(String),
    /// `pg_checksums --check` counted this many bad pages.
    BadChecksums(u64),
    /// The balances do not sum to the history's deltas, or the history has more rows than
    /// transactions ran.
    Inconsistent(String),
    /// Transactions pgbench counted as committed are missing.
    LostCommits { acked: u64, found: u64 },
}

impl Finding {
    /// Whether it shows damaged pages (the control's expected outcome); a lost commit does not.
    fn is_corruption(&self) -> bool {
        !matches!(self, Finding::LostCommits { .. })
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::RecoveryFailed(log) => write!(f, "recovery failed: {log}"),
            Finding::QueryFailed(e) => write!(f, "a check's query failed: {e}"),
            Finding::Amcheck(report) => write!(f, "pg_amcheck: {report}"),
            Finding::BadChecksums(n) => write!(f, "pg_checksums: {n} bad pages"),
            Finding::Inconsistent(what) => write!(f, "inconsistent: {what}"),
            Finding::LostCommits { acked, found } => write!(
                f,
                "lost commits: {acked} acknowledged since the last check, {found} found"
            ),
        }
    }
}

/// One case's results.
#[derive(Debug, Serialize)]
pub struct Row {
    pub case: Case,
    pub cuts: u64,
    /// Cuts made by hand after [`RUN_LIMIT`] (the armed one had not come).
    pub forced_cuts: u64,
    /// Transactions pgbench counted as committed, over all cuts.
    pub acked: u64,
    /// Transactions found committed that pgbench had not counted (the answer lost in the cut).
    pub unacked_found: u64,
    /// Plain writes tornblk tore at the cuts, and writes it lost.
    pub device_writes_torn: u64,
    pub device_writes_lost: u64,
    /// untorn's `untorn_writes` over the runs (the untorn case: the pages written through).
    pub untorn_writes: u64,
    /// `(cut, finding)`.
    pub findings: Vec<(u64, Finding)>,
    /// Why the case stopped early, if it did.
    pub stopped: Option<String>,
    pub seconds: f64,
    /// Seconds spent in each phase: `setup` (the copy, the first start), `run` (pgbench until
    /// the cut), `power` (the server killed, unmount, power on, mount), `recovery` (the start
    /// with WAL replay), `check` (the queries and pg_amcheck), `checksums` (the stop and
    /// pg_checksums) and `restart`.
    pub phases: BTreeMap<&'static str, f64>,
    pub passed: bool,
}

impl Row {
    fn new(case: Case) -> Self {
        Self {
            case,
            cuts: 0,
            forced_cuts: 0,
            acked: 0,
            unacked_found: 0,
            device_writes_torn: 0,
            device_writes_lost: 0,
            untorn_writes: 0,
            findings: Vec::new(),
            stopped: None,
            seconds: 0.0,
            phases: BTreeMap::new(),
            passed: false,
        }
    }

    /// The verdict: untorn passes every cut it was given with nothing found and its pages
    /// written through; the control passes when it showed corrupt pages.
    fn judge(&mut self, wanted_cuts: u64) {
        self.passed = self.stopped.is_none()
            && match self.case {
                Case::Untorn => {
                    self.cuts == wanted_cuts && self.findings.is_empty() && self.untorn_writes > 0
                }
                Case::PlainXfs => self.findings.iter().any(|(_, f)| f.is_corruption()),
            };
    }

    /// Adds the time since `*since` to `phase`, and restarts the clock.
    fn time(&mut self, phase: &'static str, since: &mut Instant) {
        *self.phases.entry(phase).or_default() += since.elapsed().as_secs_f64();
        *since = Instant::now();
    }

    fn verdict(&self) -> String {
        if let Some(why) = &self.stopped {
            return format!("FAILED: stopped: {why}");
        }
        match (self.case, self.passed) {
            (Case::Untorn, true) => "ok: no corruption, no commit lost".into(),
            (Case::Untorn, false) if self.untorn_writes == 0 => {
                "FAILED: no untorn write: the pages were not written through".into()
            }
            (Case::Untorn, false) => "FAILED: see the findings".into(),
            (Case::PlainXfs, true) => format!("ok: corruption shown at cut {}", self.cuts),
            (Case::PlainXfs, false) => "FAILED: the control showed no corruption".into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub rows: Vec<Row>,
    pub passed: bool,
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = format!(
            "{:<10} {:>5} {:>6} {:>7} {:>8} {:>6} {:>6} {:>13} {:>8}  verdict\n",
            "case",
            "cuts",
            "forced",
            "acked",
            "unacked",
            "torn",
            "lost",
            "untorn-writes",
            "findings"
        );
        for r in &self.rows {
            out += &format!(
                "{:<10} {:>5} {:>6} {:>7} {:>8} {:>6} {:>6} {:>13} {:>8}  {} ({:.0} s)\n",
                r.case.name(),
                r.cuts,
                r.forced_cuts,
                r.acked,
                r.unacked_found,
                r.device_writes_torn,
                r.device_writes_lost,
                r.untorn_writes,
                r.findings.len(),
                r.verdict(),
                r.seconds
            );
        }
        for r in &self.rows {
            let phases: Vec<String> = r
                .phases
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}"))
                .collect();
            out += &format!("{}: seconds: {}\n", r.case.name(), phases.join(", "));
        }
        for r in &self.rows {
            for (cut, f) in &r.findings {
                out += &format!("  {} cut {cut}: {f}\n", r.case.name());
            }
        }
        out + &self.last_line() + "\n"
    }

    /// One line for logs: `crash-postgres: ...`.
    pub fn last_line(&self) -> String {
        let part = |case: Case| {
            self.rows
                .iter()
                .find(|r| r.case == case)
                .map(|r| match case {
                    Case::Untorn => format!(
                        "untorn {} cuts, {} findings, {} transactions acknowledged",
                        r.cuts,
                        r.findings.len(),
                        r.acked
                    ),
                    Case::PlainXfs => format!(
                        "control {} after {} cut{}",
                        if r.passed {
                            "showed corruption"
                        } else {
                            "showed NO corruption"
                        },
                        r.cuts,
                        if r.cuts == 1 { "" } else { "s" }
                    ),
                })
        };
        let parts: Vec<String> = [Case::Untorn, Case::PlainXfs]
            .into_iter()
            .filter_map(part)
            .collect();
        format!(
            "crash-postgres: {} (seed {}): {}",
            parts.join("; "),
            self.seed,
            if self.passed { "passed" } else { "FAILED" }
        )
    }
}

/// Runs the cases; `Err` only when it cannot run at all.
pub fn run(options: &Options, seed: u64) -> Result<Report> {
    let install = crate::postgres::patched_install()?;
    let pg = Install::new(&install)?;
    let modules = check::Env::new(options.modules.clone(), false, false).modules()?;
    let tornblk = modules
        .iter()
        .find(|(n, _)| n == check::tornblk::TORNBLK)
        .map(|(_, p)| p.clone())
        .with_context(|| format!("no tornblk.ko under {}", options.modules.display()))?;
    let _tornblk = LoadedModule::load(check::tornblk::TORNBLK, &tornblk)?;
    let _untorn = check::load_untorn(&options.modules)?;
    let _sysctls = Sysctls::set(&DIRTY_SYSCTLS)?;

    let template = Template::new(&pg, options.scale)?;
    let wanted = |case| match case {
        Case::Untorn => options.cuts,
        Case::PlainXfs => options.control_cuts,
    };
    let total = options.cases.iter().map(|&c| wanted(c)).sum();
    let mut progress = Progress::new(!options.json, total, "crash-postgres", "cuts");
    let mut rows = Vec::new();
    for (i, &case) in options.cases.iter().enumerate() {
        let mut row = Row::new(case);
        let start = Instant::now();
        let case_seed = untorn_logic::rng::hash(seed, i as u64, 0, 0x9c5);
        if let Err(e) = run_case(
            options,
            &pg,
            &template,
            case,
            case_seed,
            wanted(case),
            &mut row,
            &mut progress,
        ) {
            row.stopped = Some(format!("{e:#}"));
        }
        row.seconds = start.elapsed().as_secs_f64();
        row.judge(wanted(case));
        rows.push(row);
    }
    progress.finish();
    let passed = !rows.is_empty() && rows.iter().all(|r| r.passed);
    Ok(Report { seed, rows, passed })
}

/// A stopped cluster with pgbench's tables (and amcheck) in it, made once on the guest's
/// temporary directory and copied to the device for each case.
struct Template(guest::ScratchDir);

impl Template {
    fn new(pg: &Install, scale: u32) -> Result<Self> {
        let template = Self(guest::ScratchDir::new("pg-crash-template")?);
        pg.new_pgbench_data_dir(&template.data(), scale, "", &["amcheck"])?;
        Ok(template)
    }

    fn data(&self) -> PathBuf {
        self.0.path().join("data")
    }
}

/// The device, XFS on it, and (the untorn case) untorn over a directory of it; the data
/// directory is `data` in the top one. Unmounted and removed when dropped.
struct Rig {
    dev: TornDev,
    lower: PathBuf,
    top: Option<PathBuf>,
    /// untorn's counters file of the current mount: found while the mount is sound, read
    /// after the cut too (a `stat` of the mount point fails once XFS has shut down).
    counters: Option<PathBuf>,
    mounted: bool,
}

impl Rig {
    /// The device with a fresh XFS holding a copy of `template` (copied on the XFS itself, at
    /// its speed: untorn sees the files all the same), mounted.
    fn new(case: Case, seed: u64, template: &Path) -> Result<Self> {
        let seed = seed.to_string();
        let mut settings = DEVICE.to_vec();
        settings.push(("seed", &seed));
        let dev = TornDev::new(DEVICE_NAME, &settings)?;
        FsType::Xfs.mkfs_with_inodes(&dev.disk, None)?;
        let mut rig = Self {
            dev,
            lower: guest::scratch_dir("pg-crash-lower")?,
            top: match case {
                Case::Untorn => Some(guest::scratch_dir("pg-crash-top")?),
                Case::PlainXfs => None,
            },
            counters: None,
            mounted: false,
        };
        rig.mount_xfs()?;
        let parent = rig.lower.join("pg");
        fs::create_dir(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
        copy_dir(template, &parent.join("data"))?;
        super::unmount(&rig.lower)?;
        rig.mount()?;
        Ok(rig)
    }

    /// The directory the data directory is in.
    fn parent(&self) -> PathBuf {
        self.top.clone().unwrap_or_else(|| self.lower.join("pg"))
    }

    fn data(&self) -> PathBuf {
        self.parent().join("data")
    }

    fn mount_xfs(&self) -> Result<()> {
        let disk = guest::path_str(&self.dev.disk)?;
        guest::run("mount", &["-t", "xfs", disk, guest::path_str(&self.lower)?])
            .context("mounting XFS")
            .map(drop)
    }

    /// Mounts XFS and (the untorn case) untorn over its data directory's parent.
    fn mount(&mut self) -> Result<()> {
        self.mount_xfs()?;
        self.mounted = true;
        let pg = self.lower.join("pg");
        if let Some(top) = &self.top {
            guest::run(
                "mount",
                &[
                    "-t",
                    check::stacking::UNTORN,
                    guest::path_str(&pg)?,
                    guest::path_str(top)?,
                ],
            )
            .context("mounting untorn")?;
            self.counters = Some(counters_file(top)?);
        }
        Ok(())
    }

    fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        if let Some(top) = &self.top {
            super::unmount(top)?;
        }
        super::unmount(&self.lower)?;
        self.mounted = false;
        Ok(())
    }

    /// untorn's `untorn_writes` (0 without untorn).
    fn untorn_writes(&self) -> Result<u64> {
        match &self.counters {
            Some(path) => Ok(read_counters_file(path)?
                .get("untorn_writes")
                .copied()
                .unwrap_or(0)),
            None => Ok(0),
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("# warning: {e:#}");
        }
        if self.dev.powered_off() {
            let _ = self.dev.command("power_on");
        }
        if let Some(top) = &self.top {
            let _ = fs::remove_dir(top);
        }
        let _ = fs::remove_dir(&self.lower);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_case(
    options: &Options,
    pg: &Install,
    template: &Template,
    case: Case,
    seed: u64,
    cuts: u64,
    row: &mut Row,
    progress: &mut Progress,
) -> Result<()> {
    let mut clock = Instant::now();
    let mut rig = Rig::new(case, seed, &template.data())?;
    let mut cluster = Cluster::new(pg, &rig.data())?;
    cluster.start(SETTINGS)?;
    let covered = cluster.show("untorn_data_directory")?;
    match case {
        Case::Untorn => ensure!(
            covered.starts_with("writethrough"),
            "untorn_data_directory is {covered:?}"
        ),
        Case::PlainXfs => ensure!(
            covered == "not untorn",
            "untorn_data_directory is {covered:?}"
        ),
    }
    cluster.ensure_show("full_page_writes", "off")?;
    cluster.ensure_show("data_checksums", "on")?;
    row.time("setup", &mut clock);

    for cut in 1..=cuts {
        let history = history_rows(&cluster)?;
        let untorn_before = rig.untorn_writes()?;
        let acked = run_until_cut(&cluster, &rig, options, row)?;
        row.time("run", &mut clock);
        row.cuts += 1;
        row.acked += acked;
        row.untorn_writes += rig.untorn_writes()?.saturating_sub(untorn_before);
        let (torn, lost) = rig.dev.cut_fates()?;
        row.device_writes_torn += torn;
        row.device_writes_lost += lost;

        cluster.kill()?;
        rig.unmount()?;
        rig.dev.command("power_on").context("power_on")?;
        rig.mount().context("mounting after the cut")?;
        row.time("power", &mut clock);

        let findings = verify(
            &mut cluster,
            history,
            acked,
            options.clients,
            row,
            &mut clock,
        )?;
        let found = !findings.is_empty();
        row.findings
            .extend(findings.into_iter().map(|f| (row.cuts, f)));
        progress.step(|| {
            format!(
                "{} cut {cut}: {} acknowledged, {} findings",
                case.name(),
                acked,
                row.findings.len()
            )
        });
        if found {
            // The cluster is damaged; there is nothing to go on from.
            break;
        }
        cluster.start(SETTINGS)?;
        row.time("restart", &mut clock);
    }
    Ok(())
}

/// Runs pgbench with a checkpoint every second until the armed cut comes (or cuts by hand
/// after [`RUN_LIMIT`]); returns the transactions pgbench counted as done.
fn run_until_cut(
    cluster: &Cluster<'_>,
    rig: &Rig,
    options: &Options,
    row: &mut Row,
) -> Result<u64> {
    let out_path = cluster.run.join("pgbench.out");
    let out =
        File::create(&out_path).with_context(|| format!("cannot create {}", out_path.display()))?;
    let err = out.try_clone().context("cannot duplicate a file")?;
    let clients = options.clients.to_string();
    let mut child = KillOnDrop(
        cluster
            .pgbench_command()
            .args([
                "-n", "-c", &clients, "-j", &clients, "-T", "100000", "postgres",
            ])
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .context("cannot run pgbench")?,
    );
    let child = &mut child.0;
    // Armed once pgbench has had time to connect and read its tables, so that the cut falls
    // in the run (one that comes earlier all the same counts as a run of nothing).
    std::thread::sleep(ARM_AFTER);
    rig.dev
        .command(&format!("cut_random {}", options.max_writes))
        .context("cut_random")?;
    let start = Instant::now();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                // Fails once the power is off: the server has gone.
                let _ = cluster.sql("CHECKPOINT");
                std::thread::sleep(CHECKPOINT_EVERY);
            }
        });
        while !rig.dev.powered_off() && start.elapsed() < RUN_LIMIT {
            if let Ok(Some(status)) = child.try_wait() {
                stop.store(true, Ordering::Relaxed);
                let log = fs::read_to_string(&out_path).unwrap_or_default();
                bail!("pgbench ended before the cut ({status}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    if !rig.dev.powered_off() {
        rig.dev.command("cut").context("cut")?;
        row.forced_cuts += 1;
    }
    wait_or_kill(child, PGBENCH_EXIT_LIMIT)?;
    let log = fs::read_to_string(&out_path)
        .with_context(|| format!("cannot read {}", out_path.display()))?;
    transactions_done(&log)
        .with_context(|| format!("pgbench printed no count of transactions:\n{log}"))
}

/// A child process, killed if it is still running when dropped: a run that fails leaves no
/// pgbench behind to hold the mount.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child`, killing it after `limit`.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().context("waiting for pgbench")?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().context("waiting for pgbench")?;
    bail!("pgbench did not end {} s after the cut", limit.as_secs())
}

/// The transactions pgbench counted, from its output: `number of transactions actually
/// processed: N` (with `/M` when it was given a count), printed also when clients were
/// aborted; or 0 when it failed before the run (it reads the tables first), which then did
/// not begin.
fn transactions_done(log: &str) -> Option<u64> {
    let counted = log.lines().find_map(|l| {
        let rest = l.strip_prefix("number of transactions actually processed:")?;
        rest.trim().split('/').next()?.trim().parse().ok()
    });
    let before_the_run = !log.contains("transaction type:") && log.contains("pgbench: error:");
    counted.or(before_the_run.then_some(0))
}

/// The rows of pgbench's history.
fn history_rows(cluster: &Cluster<'_>) -> Result<u64> {
    cluster
        .sql("SELECT count(*) FROM pgbench_history")?
        .parse()
        .context("count of pgbench_history")
}

/// After the power is back: starts the server (WAL replay), runs the checks, stops it and
/// checks the checksums. `history` is the history's rows before the run, `acked` the
/// transactions pgbench counted in it. Returns what the checks found.
fn verify(
    cluster: &mut Cluster<'_>,
    history: u64,
    acked: u64,
    clients: u32,
    row: &mut Row,
    clock: &mut Instant,
) -> Result<Vec<Finding>> {
    // The log goes on from the run before: only what this start adds tells why it failed.
    let logged = cluster.log().len();
    let started = cluster.start(SETTINGS);
    row.time("recovery", clock);
    if let Err(e) = started {
        let log = cluster.log();
        let why = server_complaints(log.get(logged..).unwrap_or(&log));
        let why = if why.is_empty() {
            format!("{e:#}")
        } else {
            why
        };
        return Ok(vec![Finding::RecoveryFailed(why)]);
    }
    let mut findings = Vec::new();
    match consistency(cluster, history, acked, clients) {
        Ok((f, unacked)) => {
            findings.extend(f);
            row.unacked_found += unacked;
        }
        Err(e) => findings.push(Finding::QueryFailed(format!("{e:#}"))),
    }
    let out = cluster
        .pg
        .command("pg_amcheck", false, &cluster.run)
        .arg("-h")
        .arg(&cluster.run)
        .args(["-U", crate::postgres::USER, "--heapallindexed", "postgres"])
        .output()
        .context("cannot run pg_amcheck")?;
    if !out.status.success() {
        findings.push(Finding::Amcheck(format!(
            "{} {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    row.time("check", clock);
    cluster
        .stop()
        .context("stopping the server after the checks")?;
    let bad = cluster.pg.bad_checksums(&cluster.data)?;
    if bad > 0 {
        findings.push(Finding::BadChecksums(bad));
    }
    row.time("checksums", clock);
    Ok(findings)
}

/// The history against pgbench's count, and the balances against the history: `Ok` with what
/// is wrong and how many transactions were found beyond the count; `Err` if a query failed.
fn consistency(
    cluster: &Cluster<'_>,
    history: u64,
    acked: u64,
    clients: u32,
) -> Result<(Vec<Finding>, u64)> {
    let mut findings = Vec::new();
    let found = history_rows(cluster)?.saturating_sub(history);
    if found < acked {
        findings.push(Finding::LostCommits { acked, found });
    } else if found > acked + u64::from(clients) {
        findings.push(Finding::Inconsistent(format!(
            "{found} new history rows, but {acked} transactions counted by {clients} clients"
        )));
    }
    let sums = cluster.sql(
        "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts) || ' ' || \
         (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers) || ' ' || \
         (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches) || ' ' || \
         (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
    )?;
    let sums: Vec<&str> = sums.split_whitespace().collect();
    ensure!(sums.len() == 4, "balances: {sums:?}");
    if sums.iter().any(|s| *s != sums[3]) {
        findings.push(Finding::Inconsistent(format!(
            "sums of account, teller and branch balances and of the history's deltas differ: {}",
            sums.join(" ")
        )));
    }
    Ok((findings, found.saturating_sub(acked)))
}

/// The lines of a server log that say why it stopped (the last few).
fn server_complaints(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["PANIC", "FATAL", "ERROR", "invalid page", "checksum"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_count_with_and_without_a_total() {
        assert_eq!(
            transactions_done("x\nnumber of transactions actually processed: 1234\ny"),
            Some(1234)
        );
        assert_eq!(
            transactions_done("number of transactions actually processed: 17/100\n"),
            Some(17)
        );
        // The cut came while pgbench read the tables, before the run.
        assert_eq!(
            transactions_done(
                "pgbench (17.11)\npgbench: error: could not count number of branches: \
                 server closed the connection unexpectedly\n"
            ),
            Some(0)
        );
        // A summary without its count is not a run of nothing.
        assert_eq!(
            transactions_done("transaction type: <builtin: TPC-B (sort of)>\npgbench: error: x\n"),
            None
        );
        assert_eq!(transactions_done("garbage"), None);
    }

    #[test]
    fn complaints_keep_the_last_four_relevant_lines() {
        let log =
            "LOG: a\nFATAL: 1\nLOG: b\nERROR: 2\nPANIC: 3\nWARNING: invalid page 4\nFATAL: 5\n";
        assert_eq!(
            server_complaints(log),
            "ERROR: 2 | PANIC: 3 | WARNING: invalid page 4 | FATAL: 5"
        );
        assert_eq!(server_complaints("LOG: fine\n"), "");
    }

    #[test]
    fn verdicts() {
        let mut r = Row::new(Case::Untorn);
        r.cuts = 3;
        r.untorn_writes = 10;
        r.judge(3);
        assert!(r.passed);
        r.judge(4);
        assert!(!r.passed, "fewer cuts than asked");
        r.untorn_writes = 0;
        r.judge(3);
        assert!(!r.passed, "nothing written through");
        r.untorn_writes = 10;
        r.findings.push((2, Finding::BadChecksums(1)));
        r.judge(3);
        assert!(!r.passed);

        let mut c = Row::new(Case::PlainXfs);
        c.cuts = 5;
        c.judge(5);
        assert!(!c.passed, "a control that shows nothing fails");
        c.findings
            .push((5, Finding::LostCommits { acked: 2, found: 1 }));
        c.judge(5);
        assert!(!c.passed, "a lost commit is not a torn page");
        c.findings
            .push((5, Finding::RecoveryFailed("invalid page".into())));
        c.judge(5);
        assert!(c.passed);
        c.stopped = Some("mount failed".into());
        c.judge(5);
        assert!(!c.passed);
    }
}
