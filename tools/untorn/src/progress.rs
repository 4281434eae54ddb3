// SPDX-License-Identifier: GPL-2.0

//! Where a long run is: a bar on a terminal, else a line on stderr now and then (guests have
//! no terminal, and their output goes to logs).

use indicatif::{ProgressBar, ProgressStyle};
use std::{
    io::{self, IsTerminal},
    time::{Duration, Instant},
};

/// How often the line form prints.
const LINE_EVERY: Duration = Duration::from_secs(30);

pub struct Progress {
    bar: Option<ProgressBar>,
    /// `crash`, `bench`: the lines' prefix.
    label: &'static str,
    /// What is counted: `cuts`, `runs`.
    unit: &'static str,
    total: u64,
    done: u64,
    /// When the line form last printed (`None`: not yet).
    last_line: Option<Instant>,
}

impl Progress {
    /// A progress of `total` steps; a bar if `wanted` and stderr is a terminal.
    pub fn new(wanted: bool, total: u64, label: &'static str, unit: &'static str) -> Self {
        let bar = (wanted && io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(&format!(
                "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self {
            bar,
            label,
            unit,
            total,
            done: 0,
            last_line: None,
        }
    }

    /// One more step done; `msg` says what it was.
    pub fn step(&mut self, msg: impl FnOnce() -> String) {
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.done);
                bar.set_message(msg());
            }
            None if self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) => {
                eprintln!(
                    "{}: {}/{} {}; {}",
                    self.label,
                    self.done,
                    self.total,
                    self.unit,
                    msg()
                );
                self.last_line = Some(Instant::now());
            }
            None => {}
        }
    }

    /// Prints a line above the bar (or just a line).
    pub fn println(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
