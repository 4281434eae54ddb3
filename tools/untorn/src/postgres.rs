// SPDX-License-Identifier: GPL-2.0

//! Running the PostgreSQL that `tools/testing/build-postgres` builds (with
//! `tools/postgres/*.patch`) inside the guest: the installation, its clusters and their
//! programs. The guest tests (`check::postgres`), the crash test (`crash::postgres`) and the
//! benchmark (`pgbench`) share it.
//!
//! The clusters run as `nobody` (initdb and the server refuse root), from a bind mount of the
//! installation (the cache may be under a home directory `nobody` cannot enter).

use crate::{
    guest,
    sys::{self, describe},
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

/// The environment variables naming the installations (`build-postgres`'s output): with our
/// patches, and without (`build-postgres --unpatched`).
pub const INSTALL_VAR: &str = "UNTORN_POSTGRES";
pub const UNPATCHED_VAR: &str = "UNTORN_POSTGRES_UNPATCHED";
/// The installation's data directory template (`build-postgres` makes it).
const TEMPLATE: &str = "template.tar.gz";
/// The unprivileged user the clusters run as.
pub const USER: &str = "nobody";

/// The installation named by the environment variable `var`: `Err(why)` with how to build it
/// if it is unset or empty; an error too if it names a directory without the programs.
pub fn install_from_env(var: &str) -> Result<std::result::Result<PathBuf, String>> {
    let option = if var == UNPATCHED_VAR {
        " --unpatched"
    } else {
        ""
    };
    let dir = match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            return Ok(Err(format!(
                "PostgreSQL is not built ({var} is not set): run tools/testing/build-postgres{option}"
            )));
        }
    };
    for program in [
        "initdb",
        "pg_ctl",
        "postgres",
        "psql",
        "pg_checksums",
        "pgbench",
    ] {
        let path = dir.join("bin").join(program);
        ensure!(
            path.is_file(),
            "{var}={}: no {}",
            dir.display(),
            path.display()
        );
    }
    let template = dir.join(TEMPLATE);
    ensure!(
        template.is_file(),
        "{var}={}: no data directory template {}: run tools/testing/build-postgres{option}",
        dir.display(),
        template.display()
    );
    Ok(Ok(dir))
}

/// The patched installation, which must be there.
pub fn patched_install() -> Result<PathBuf> {
    install_from_env(INSTALL_VAR)?.map_err(|why| anyhow!(why))
}

/// A user's ids, from `/etc/passwd`.
#[derive(Clone, Copy)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub fn lookup(name: &str) -> Result<Self> {
        let passwd = fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[0] == name {
                return Ok(Self {
                    uid: fields[2].parse().context("bad uid in /etc/passwd")?,
                    gid: fields[3].parse().context("bad gid in /etc/passwd")?,
                });
            }
        }
        bail!("no user {name} in /etc/passwd")
    }

    /// Makes `path` (a directory) the user's, mode 0700.
    pub fn own_dir(self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("cannot chown {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod {}", path.display()))
    }
}

/// A directory bind-mounted on a scratch directory; unmounted when dropped.
struct BindMount {
    dir: PathBuf,
}

impl BindMount {
    fn new(source: &Path) -> Result<Self> {
        let dir = guest::scratch_dir("postgres-install")?;
        if let Err(e) = sys::mount(source, &dir, "", libc::MS_BIND, "") {
            let _ = fs::remove_dir(&dir);
            bail!("cannot bind-mount {}: {}", source.display(), describe(&e));
        }
        Ok(Self { dir })
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        match sys::umount(&self.dir) {
            Ok(()) => {
                let _ = fs::remove_dir(&self.dir);
            }
            Err(e) => println!("# warning: umount {}: {}", self.dir.display(), describe(&e)),
        }
    }
}

/// The installation, reachable by [`USER`], who runs its programs.
pub struct Install {
    mount: BindMount,
    pub user: User,
    /// [`Self::template`] unpacked, once it was needed.
    unpacked: OnceLock<guest::ScratchDir>,
}

impl Install {
    pub fn new(dir: &Path) -> Result<Self> {
        Ok(Self {
            user: User::lookup(USER)?,
            mount: BindMount::new(dir)?,
            unpacked: OnceLock::new(),
        })
    }

    pub fn bin(&self, program: &str) -> PathBuf {
        self.mount.dir.join("bin").join(program)
    }

    /// A PostgreSQL program, with a clean environment; as the user if `as_user`.
    pub fn command(&self, program: &str, as_user: bool, cwd: &Path) -> Command {
        let mut cmd = Command::new(self.bin(program));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LD_LIBRARY_PATH", self.mount.dir.join("lib"))
            .env("LC_ALL", "C")
            .current_dir(cwd);
        if as_user {
            // std drops root's supplementary groups too.
            cmd.uid(self.user.uid).gid(self.user.gid);
        }
        cmd
    }

    /// The data directory that `build-postgres` made with this installation's initdb (data
    /// checksums on, trust authentication, the C locale), owned by [`USER`], as a compressed
    /// tar file: initdb takes about a minute under TCG, and copying a directory of a thousand
    /// files from the host (through 9p) longer still.
    pub fn template(&self) -> PathBuf {
        self.mount.dir.join(TEMPLATE)
    }

    /// A new data directory `data`: a copy of [`Self::template`], which is unpacked on the
    /// guest's temporary directory the first time. Not unpacked where `data` is: tar writes in
    /// records of 10 KiB, each a synchronous write on an untorn mount with `writethrough=all`.
    pub fn new_data_dir(&self, data: &Path) -> Result<()> {
        let unpacked = match self.unpacked.get() {
            Some(dir) => dir,
            None => {
                let dir = guest::ScratchDir::new("postgres-template")?;
                let template = dir.path().join("data");
                fs::create_dir(&template)
                    .with_context(|| format!("cannot create {}", template.display()))?;
                let out = Command::new("tar")
                    .arg("-C")
                    .arg(&template)
                    .args(["--numeric-owner", "--same-owner", "-p", "-xzf"])
                    .arg(self.template())
                    .output();
                checked(&format!("unpacking {}", self.template().display()), out)?;
                self.unpacked.get_or_init(|| dir)
            }
        };
        copy_dir(&unpacked.path().join("data"), data)
    }

    /// A new data directory `data` with pgbench's tables at `scale` (`pgbench -i`) and the
    /// `extensions` in database `postgres`; its server runs with `options` meanwhile and is
    /// stopped again.
    pub fn new_pgbench_data_dir(
        &self,
        data: &Path,
        scale: u32,
        options: &str,
        extensions: &[&str],
    ) -> Result<()> {
        self.new_data_dir(data)?;
        let mut cluster = Cluster::new(self, data)?;
        cluster.start(options)?;
        cluster.pgbench(&["-i", "-q", "-s", &scale.to_string()])?;
        for extension in extensions {
            cluster.sql(&format!("CREATE EXTENSION {extension}"))?;
        }
        cluster.stop()
    }

    /// `pg_checksums --check` of a stopped cluster's data directory: `Ok(bad)` with the
    /// number of pages whose checksum does not match, an error if it could not check.
    pub fn bad_checksums(&self, data: &Path) -> Result<u64> {
        let out = self
            .command("pg_checksums", true, Path::new("/"))
            .args(["--check", "-D"])
            .arg(data)
            .output()
            .context("cannot run pg_checksums")?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // It exits 1 on bad checksums, and also when it cannot check; the summary tells.
        let bad = report.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Bad checksums:")
                .and_then(|n| n.trim().parse::<u64>().ok())
        });
        match bad {
            Some(bad) if out.status.success() == (bad == 0) => Ok(bad),
            _ => bail!("pg_checksums --check ({}):\n{report}", out.status),
        }
    }
}

/// Fails with the command's output unless it exited 0; returns its standard output.
pub fn checked(what: &str, out: std::io::Result<Output>) -> Result<String> {
    let out = out.with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The processes named `postgres` of user `uid`.
fn server_processes(uid: u32) -> Result<Vec<libc::pid_t>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context("cannot list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process may end while we look: skip what cannot be read.
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
        if comm.trim() == "postgres" && owner == Some(uid) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Copies directory `from` to `to` (a new path) with modes and owners. Times are not copied:
/// setting a file's times through untorn writes its dirty data back first, a synchronous write
/// per file (72 s instead of 25 s for a data directory under TCG).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let out = Command::new("cp")
        .args(["-R", "--preserve=mode,ownership"])
        .arg(from)
        .arg(to)
        .output();
    checked(
        &format!(
            "cp -R --preserve=mode,ownership {} {}",
            from.display(),
            to.display()
        ),
        out,
    )
    .map(drop)
}

/// A data directory and its server, run by the installation's user; stopped (if running) and
/// its socket directory removed when dropped.
pub struct Cluster<'a> {
    pub pg: &'a Install,
    pub data: PathBuf,
    /// The socket directory and the server log, on the guest's temporary directory.
    pub run: PathBuf,
    running: bool,
}

impl<'a> Cluster<'a> {
    /// The cluster of the existing data directory `data`, not started.
    pub fn new(pg: &'a Install, data: &Path) -> Result<Self> {
        let run = guest::scratch_dir("postgres-run")?;
        pg.user.own_dir(&run)?;
        Ok(Self {
            pg,
            data: data.to_path_buf(),
            run,
            running: false,
        })
    }

    /// pg_ctl start, with extra server options (`-c name=value ...`), which come after and so
    /// override the defaults here.
    pub fn start(&mut self, options: &str) -> Result<()> {
        let options = format!(
            "-k {} -c listen_addresses='' -c shared_buffers=16MB -c max_connections=10 {options}",
            self.run.display()
        );
        let out = self
            .pg
            .command("pg_ctl", true, &self.run)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "600", "-o", &options, "start"])
            .output();
        let started = checked("pg_ctl start", out);
        self.running = started.is_ok() || self.data.join("postmaster.pid").exists();
        started
            .map(drop)
            .with_context(|| format!("server log:\n{}", self.log()))
    }

    /// pg_ctl stop (fast shutdown: a checkpoint, then exit).
    pub fn stop(&mut self) -> Result<()> {
        self.pg_ctl_stop("fast", 600)
    }

    /// pg_ctl stop in immediate mode: every server process quits at once, without a
    /// checkpoint, as in a crash.
    pub fn stop_immediate(&mut self) -> Result<()> {
        self.pg_ctl_stop("immediate", 60)
    }

    /// Ends the server, whatever its state (running, crashed, gone with its pid file left):
    /// an immediate stop, then SIGKILL for any `postgres` process of the user left; returns
    /// when none is left.
    pub fn kill(&mut self) -> Result<()> {
        let _ = self.stop_immediate();
        for _ in 0..300 {
            let left = server_processes(self.pg.user.uid)?;
            if left.is_empty() {
                self.running = false;
                return Ok(());
            }
            for pid in left {
                // SAFETY: Sends a signal; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!(
            "server processes of uid {} outlive SIGKILL",
            self.pg.user.uid
        )
    }

    fn pg_ctl_stop(&mut self, mode: &str, timeout_secs: u32) -> Result<()> {
        let out = self
            .pg
            .command("pg_ctl", true, &self.run)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", &timeout_secs.to_string(), "stop"])
            .output();
        let stopped = checked(&format!("pg_ctl stop -m {mode}"), out);
        if stopped.is_ok() {
            self.running = false;
        }
        stopped.map(drop)
    }

    pub fn log_path(&self) -> PathBuf {
        self.run.join("server.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// One SQL command through psql (as root, connecting as the cluster's superuser, whose
    /// name is the user's) to database `postgres`; the output, unaligned and without
    /// headers, trimmed.
    pub fn sql(&self, sql: &str) -> Result<String> {
        let out = self
            .pg
            .command("psql", false, &self.run)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", USER])
            .args(["-d", "postgres", "-h"])
            .arg(&self.run)
            .args(["-c", sql])
            .output();
        Ok(checked(&format!("psql -c {sql:?}"), out)?
            .trim()
            .to_string())
    }

    /// pgbench against database `postgres`, as the user, in the socket directory (where its
    /// `-l` logs go unless `--log-prefix` says otherwise); its standard output.
    pub fn pgbench(&self, args: &[&str]) -> Result<String> {
        let out = self.pgbench_command().args(args).arg("postgres").output();
        checked(&format!("pgbench {}", args.join(" ")), out)
    }

    /// pgbench connected to the cluster, as the user, in the socket directory: the caller adds
    /// the options and the database.
    pub fn pgbench_command(&self) -> Command {
        let mut cmd = self.pg.command("pgbench", true, &self.run);
        cmd.arg("-h").arg(&self.run).args(["-U", USER]);
        cmd
    }

    pub fn show(&self, setting: &str) -> Result<String> {
        self.sql(&format!("SHOW {setting}"))
    }

    /// Fails unless `SHOW setting` gives `want`.
    pub fn ensure_show(&self, setting: &str, want: &str) -> Result<()> {
        let got = self.show(setting)?;
        ensure!(got == want, "SHOW {setting}: {got:?}, expected {want:?}");
        Ok(())
    }

    /// The path of a relation's first segment file, relative to the data directory
    /// (`pg_relation_filepath`).
    pub fn relation_path(&self, relation: &str) -> Result<String> {
        let rel = self.sql(&format!("SELECT pg_relation_filepath('{relation}')"))?;
        ensure!(
            rel.starts_with("base/"),
            "pg_relation_filepath('{relation}'): {rel:?}"
        );
        Ok(rel)
    }

    /// The relation's first segment file.
    pub fn relation_file(&self, relation: &str) -> Result<PathBuf> {
        Ok(self.data.join(self.relation_path(relation)?))
    }

    /// The WAL segment file being written.
    pub fn wal_file(&self) -> Result<PathBuf> {
        let name = self.sql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")?;
        Ok(self.data.join("pg_wal").join(name))
    }

    /// Stops the server and runs `pg_checksums --check`: every page's checksum must match.
    pub fn stop_and_check_checksums(&mut self) -> Result<()> {
        self.stop()?;
        let bad = self.pg.bad_checksums(&self.data)?;
        ensure!(bad == 0, "pg_checksums --check: {bad} bad checksums");
        Ok(())
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        if self.running {
            if let Err(e) = self.stop() {
                println!("# warning: {e:#}");
                // Last resort, or the untorn mount under it could not be unmounted.
                let _ = self.stop_immediate();
            }
        }
        let _ = fs::remove_dir_all(&self.run);
    }
}
