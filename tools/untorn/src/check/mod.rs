// SPDX-License-Identifier: GPL-2.0

//! `untorn check`: the guest tests, reported as TAP.
//!
//! Each test asserts a real outcome in the running kernel; there is no skipping: a test whose
//! device or module is missing fails and says what is missing.

mod foundation;

use anyhow::{Context as _, Result};
use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

/// What the tests share.
pub struct Env {
    /// The directory holding the built `.ko` files (vm-run sets `UNTORN_MODULES`).
    pub modules_dir: PathBuf,
}

impl Env {
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

fn collect_modules(dir: &Path, found: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_modules(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "ko") {
            if let Some(stem) = path.file_stem() {
                found.push((stem.to_string_lossy().into_owned(), path));
            }
        }
    }
    Ok(())
}

/// The body of a test: `Ok` when every assertion held.
type TestFn = Box<dyn Fn(&Env) -> Result<()>>;

/// One test.
pub struct Test {
    pub name: String,
    pub run: TestFn,
}

impl Test {
    pub fn new(name: impl Into<String>, run: impl Fn(&Env) -> Result<()> + 'static) -> Self {
        Self {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// The counts of a run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

/// Every test, in order.
pub fn all_tests(env: &Env) -> Result<Vec<Test>> {
    foundation::tests(env)
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
        let start = Instant::now();
        let result = (test.run)(env);
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                summary.passed += 1;
                writeln!(out, "ok {n} - {} # {secs:.1}s", test.name)?;
            }
            Err(e) => {
                summary.failed += 1;
                writeln!(out, "not ok {n} - {} # {secs:.1}s", test.name)?;
                for line in format!("{e:#}").lines() {
                    writeln!(out, "#   {line}")?;
                }
            }
        }
        out.flush()?;
    }
    Ok(summary)
}
