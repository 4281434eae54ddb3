// SPDX-License-Identifier: GPL-2.0

//! `untorn check`: the guest tests, reported as TAP.
//!
//! Each test asserts a real outcome in the running kernel; a test whose device or module is
//! missing fails and says what is missing. The one exception is what the project builds only
//! on request, outside `make`: the PostgreSQL tests need `tools/testing/build-postgres`'s
//! build, and without it they return [`Skip`], reported as TAP's `# SKIP` with the reason.
//!
//! Consecutive tests of one *group* share a fixture (e.g. a lower filesystem with untorn
//! mounted over it), made by the first test of the group that runs and released when a test of
//! another group comes, so that a slow set-up under TCG is paid once per group.

mod foundation;
mod postgres;
mod pressure;
mod raw;
pub(crate) mod stacking;
mod subject;
pub(crate) mod tornblk;
pub(crate) mod writethrough;

use anyhow::{anyhow, Context as _, Result};
use std::{
    any::Any,
    cell::{RefCell, RefMut},
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

/// What the tests share.
pub struct Env {
    /// The directory holding the built `.ko` files (vm-run sets `UNTORN_MODULES`).
    pub modules_dir: PathBuf,
    /// Run the stacking tests directly on the lower filesystem instead of through untorn, to
    /// show that the tests themselves expect what XFS and ext4 do.
    pub reference: bool,
    /// Also run the memory-pressure tests (`make pressure`).
    pub pressure: bool,
    fixture: RefCell<Option<Fixture>>,
}

/// The fixture of a group, or why it could not be made (remembered, so that the rest of the
/// group fails at once with the cause instead of retrying a slow set-up).
struct Fixture {
    group: String,
    state: std::result::Result<Box<dyn Any>, String>,
}

impl Env {
    pub fn new(modules_dir: PathBuf, reference: bool, pressure: bool) -> Self {
        Self {
            modules_dir,
            reference,
            pressure,
            fixture: RefCell::new(None),
        }
    }

    /// The fixture of `group`, made with `make` if this group has none yet.
    pub fn fixture<T: 'static>(
        &self,
        group: &str,
        make: impl FnOnce(&Env) -> Result<T>,
    ) -> Result<RefMut<'_, T>> {
        let current = self.fixture.borrow().as_ref().map(|f| f.group.clone());
        if current.as_deref() != Some(group) {
            // Release the old fixture (unmounting its filesystems) before making the new one,
            // which may reuse the same device.
            self.fixture.replace(None);
            let state = make(self).map(|f| Box::new(f) as Box<dyn Any>);
            self.fixture.replace(Some(Fixture {
                group: group.to_string(),
                state: state.map_err(|e| format!("{e:#}")),
            }));
        }
        let fixture = self.fixture.borrow_mut();
        RefMut::filter_map(fixture, |f| match f {
            Some(Fixture {
                state: Ok(state), ..
            }) => state.downcast_mut::<T>(),
            _ => None,
        })
        .map_err(|fixture| match fixture.as_ref().map(|f| &f.state) {
            Some(Err(cause)) => anyhow!("the set-up of {group} failed: {cause}"),
            _ => anyhow!("the fixture of {group} has another type"),
        })
    }

    /// Takes the fixture of `group` out of the environment (to tear it down in a test), if it
    /// was made and has this type.
    pub fn take_fixture<T: 'static>(&self, group: &str) -> Option<T> {
        let mut slot = self.fixture.borrow_mut();
        if slot.as_ref().is_some_and(|f| f.group == group) {
            if let Some(Fixture { state: Ok(b), .. }) = slot.take() {
                return b.downcast::<T>().ok().map(|b| *b);
            }
        }
        None
    }

    /// Releases the fixture unless it belongs to `group`.
    fn release_fixture_unless(&self, group: Option<&str>) {
        let keep = self
            .fixture
            .borrow()
            .as_ref()
            .is_some_and(|f| Some(f.group.as_str()) == group);
        if !keep {
            self.fixture.replace(None);
        }
    }
    /// Every module of the repo, as (name, path), sorted by name.
    pub fn modules(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut found = Vec::new();
        collect_modules(&self.modules_dir, &mut found)?;
        found.sort();
        if found.is_empty() {
            anyhow::bail!("no .ko files under {}", self.modules_dir.display());
        }
        Ok(found)
    }
}

/// Loads untorn.ko from the built modules under `modules_dir` unless it is loaded already.
pub fn load_untorn(modules_dir: &Path) -> Result<crate::guest::LoadedModule> {
    let env = Env::new(modules_dir.to_path_buf(), false, false);
    let path = env
        .modules()?
        .into_iter()
        .find(|(name, _)| name == stacking::UNTORN)
        .map(|(_, path)| path)
        .with_context(|| format!("no {}.ko under {}", stacking::UNTORN, modules_dir.display()))?;
    crate::guest::LoadedModule::load(stacking::UNTORN, &path)
}

fn collect_modules(dir: &Path, found: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        // Not through symbolic links: Kbuild leaves `source -> <repo>` in the output directory,
        // and walking the repo (over 9p, under TCG) takes minutes.
        if entry.file_type()?.is_dir() {
            collect_modules(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "ko") {
            if let Some(stem) = path.file_stem() {
                found.push((stem.to_string_lossy().into_owned(), path));
            }
        }
    }
    Ok(())
}

/// Ends the whole run with a diagnosis when a test stops making progress (a task stuck in the
/// kernel would otherwise hold the guest until vm-run's time limit, with nothing said).
pub struct Watchdog {
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    /// Starts watching the calling thread: if [`Watchdog::tick`] is not called for `limit`,
    /// prints what the thread waits on and the memory state, then a TAP `Bail out!` line,
    /// and exits.
    pub fn start(what: &str, limit: std::time::Duration) -> Self {
        use std::sync::{
            atomic::{AtomicBool, AtomicU64, Ordering},
            Arc,
        };
        let progress = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        // SAFETY: No arguments; returns the caller's thread id.
        let tid = unsafe { libc::gettid() };
        let (p, d, what) = (progress.clone(), done.clone(), what.to_string());
        std::thread::spawn(move || {
            let mut last = (0, Instant::now());
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(500));
                let now = p.load(Ordering::Relaxed);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() >= limit && !d.load(Ordering::Relaxed) {
                    hang_report(&what, tid, limit);
                }
            }
        });
        Self { progress, done }
    }

    pub fn tick(&self) {
        self.progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn hang_report(what: &str, tid: i32, limit: std::time::Duration) -> ! {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "#   {what}: no progress for {}s", limit.as_secs());
    let task = format!("/proc/self/task/{tid}");
    for file in ["wchan", "stack"] {
        let text = std::fs::read_to_string(format!("{task}/{file}")).unwrap_or_default();
        for line in text.lines() {
            let _ = writeln!(out, "#   {file}: {line}");
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    for line in meminfo.lines().filter(|l| {
        ["MemFree", "MemAvailable", "Cached", "Dirty", "Writeback:"]
            .iter()
            .any(|f| l.starts_with(f))
    }) {
        let _ = writeln!(out, "#   {line}");
    }
    // The kernel's view of every blocked task goes to dmesg, which vm-run keeps.
    let _ = std::fs::write("/proc/sysrq-trigger", "w");
    let _ = writeln!(out, "Bail out! {what} hung");
    let _ = out.flush();
    std::process::exit(1)
}

/// The error of a test that cannot run here, with the reason: reported as TAP's
/// `ok N - name # SKIP reason`, counted as skipped, never as passed. Only for what the project
/// builds on request (PostgreSQL); a missing device or module is a failure.
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skip {}

/// The body of a test: `Ok` when every assertion held.
type TestFn = Box<dyn Fn(&Env) -> Result<()>>;

/// One test.
pub struct Test {
    pub name: String,
    /// The group whose fixture the test uses, if any.
    pub group: Option<String>,
    pub run: TestFn,
}

impl Test {
    pub fn new(name: impl Into<String>, run: impl Fn(&Env) -> Result<()> + 'static) -> Self {
        Self {
            name: name.into(),
            group: None,
            run: Box::new(run),
        }
    }

    /// A test that uses the fixture of `group` (see [`Env::fixture`]).
    pub fn in_group(
        name: impl Into<String>,
        group: impl Into<String>,
        run: impl Fn(&Env) -> Result<()> + 'static,
    ) -> Self {
        Self {
            group: Some(group.into()),
            ..Self::new(name, run)
        }
    }
}

/// The counts of a run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    /// Counts a test's result and returns its TAP lines: `ok`, `ok ... # SKIP reason` for a
    /// [`Skip`], or `not ok` followed by the error.
    fn record(&mut self, n: usize, name: &str, result: Result<()>, secs: f64) -> String {
        match result {
            Ok(()) => {
                self.passed += 1;
                format!("ok {n} - {name} # {secs:.1}s\n")
            }
            Err(e) => match e.downcast::<Skip>() {
                Ok(Skip(reason)) => {
                    self.skipped += 1;
                    format!("ok {n} - {name} # SKIP {reason}\n")
                }
                Err(e) => {
                    self.failed += 1;
                    let mut lines = format!("not ok {n} - {name} # {secs:.1}s\n");
                    for line in format!("{e:#}").lines() {
                        lines += &format!("#   {line}\n");
                    }
                    lines
                }
            },
        }
    }
}

/// Every test, in order. In reference mode only the tests that can run on a plain lower
/// filesystem.
pub fn all_tests(env: &Env) -> Result<Vec<Test>> {
    let mut tests = if env.reference {
        Vec::new()
    } else {
        foundation::tests(env)?
    };
    // The memory-pressure tests stay last: a hang there ends the run.
    let (pressure, stacked): (Vec<Test>, Vec<Test>) = stacking::tests(env)
        .into_iter()
        .partition(|t| t.name.starts_with("pressure/"));
    tests.extend(stacked);
    if !env.reference {
        tests.extend(tornblk::tests());
    }
    tests.extend(writethrough::tests(env));
    if !env.reference {
        tests.extend(raw::tests());
        tests.extend(postgres::tests());
    }
    tests.extend(pressure);
    Ok(tests)
}

/// Runs the tests whose names contain `filter`, printing TAP to standard output.
pub fn run(env: &Env, filter: Option<&str>) -> Result<Summary> {
    let tests: Vec<Test> = all_tests(env)?
        .into_iter()
        .filter(|t| filter.is_none_or(|f| t.name.contains(f)))
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "TAP version 13")?;
    writeln!(out, "1..{}", tests.len())?;
    let mut summary = Summary::default();
    for (i, test) in tests.iter().enumerate() {
        let n = i + 1;
        env.release_fixture_unless(test.group.as_deref());
        let start = Instant::now();
        let result = (test.run)(env);
        let secs = start.elapsed().as_secs_f64();
        write!(out, "{}", summary.record(n, &test.name, result, secs))?;
        out.flush()?;
    }
    env.release_fixture_unless(None);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_reported_and_counted_as_skipped_not_passed() {
        let mut summary = Summary::default();
        let skip = Err(Skip("no build".into()).into());
        assert_eq!(
            summary.record(1, "t/a", skip, 0.0),
            "ok 1 - t/a # SKIP no build\n"
        );
        // A skip under context is still a skip.
        let wrapped = Err(anyhow::Error::from(Skip("again".into())).context("outer"));
        assert_eq!(
            summary.record(2, "t/b", wrapped, 0.0),
            "ok 2 - t/b # SKIP again\n"
        );
        assert_eq!(
            summary.record(3, "t/c", Err(anyhow!("broken")), 1.25),
            "not ok 3 - t/c # 1.2s\n#   broken\n"
        );
        assert_eq!(summary.record(4, "t/d", Ok(()), 2.0), "ok 4 - t/d # 2.0s\n");
        assert_eq!((summary.passed, summary.failed, summary.skipped), (1, 1, 2));
    }
}
