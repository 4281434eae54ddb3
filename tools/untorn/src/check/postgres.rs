// SPDX-License-Identifier: GPL-2.0

//! PostgreSQL on untorn (issue 8, part 1): the PostgreSQL that `tools/testing/build-postgres`
//! builds with `tools/postgres/*.patch` puts its relation files on untorn in writethrough mode,
//! leaves files on other filesystems alone, and says which in `SHOW untorn_data_directory`;
//! without the patch's help (`untorn_writethrough = off`, which makes the patched server set
//! nothing, as an unpatched one) the `writethrough=all` mount option covers them.
//!
//! The installation is the directory in `UNTORN_POSTGRES`, which `tools/testing/vm-run` sets to
//! the cached build when there is one; without it the tests are skipped, with the reason. The
//! clusters run as `nobody` (initdb and the server refuse root), from a bind mount of the
//! installation (the cache may be under a home directory `nobody` cannot enter), on a fresh XFS
//! on the `scsi_debug` disk: through untorn mounted over a directory of it, or directly.

use super::{
    stacking::UNTORN,
    writethrough::{ensure_mode, expect_err, open_ro, read_counters, Counters},
    Env, Skip, Test,
};
use crate::{
    guest::{self, FsType, LoadedModule, Mounted},
    sys::{self, describe},
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};
use untorn_logic::mount_options::FileMode;

/// The environment variable naming the installation (`build-postgres`'s output).
const INSTALL_VAR: &str = "UNTORN_POSTGRES";
/// The fixture's group.
const GROUP: &str = "postgres";
/// The unprivileged user the clusters run as.
const USER: &str = "nobody";
/// The patch's warning, which no test may see.
const PATCH_WARNING: &str = "could not set untorn writethrough mode";
/// Rows of the test table: about 1 MiB, some 120 pages of 8 KiB.
const ROWS: u32 = 4_000;

type PgTest = fn(&Fixture) -> Result<()>;

const TESTS: &[(&str, PgTest)] = &[
    ("patched-on-untorn-writethrough", patched_on_untorn),
    ("patched-on-plain-xfs-untouched", patched_on_plain_xfs),
    ("unpatched-writethrough-all", unpatched_writethrough_all),
];

pub fn tests() -> Vec<Test> {
    TESTS
        .iter()
        .map(|&(name, f)| {
            Test::in_group(format!("postgres/xfs/{name}"), GROUP, move |env| {
                // Before the fixture: a skip must not be remembered as a failed set-up.
                let install = install_dir()?;
                let fixture = env.fixture(GROUP, |env| Fixture::new(env, &install))?;
                f(&fixture)
            })
        })
        .collect()
}

/// The installation from `UNTORN_POSTGRES`, or a [`Skip`] saying how to get one.
fn install_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os(INSTALL_VAR) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            return Err(Skip(format!(
            "PostgreSQL is not built ({INSTALL_VAR} is not set): run tools/testing/build-postgres"
        ))
            .into())
        }
    };
    // Named but broken is a failure, not a skip.
    for program in ["initdb", "pg_ctl", "postgres", "psql", "pg_checksums"] {
        let path = dir.join("bin").join(program);
        ensure!(
            path.is_file(),
            "{INSTALL_VAR}={}: no {}",
            dir.display(),
            path.display()
        );
    }
    Ok(dir)
}

/// A user's ids, from `/etc/passwd`.
#[derive(Clone, Copy)]
struct User {
    uid: u32,
    gid: u32,
}

impl User {
    fn lookup(name: &str) -> Result<Self> {
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
    fn own_dir(self, path: &Path) -> Result<()> {
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

/// What the tests share: the installation, the user, a fresh XFS on the scsi_debug disk, a
/// data directory made by initdb on it that each test copies (initdb takes half a minute
/// under TCG), and untorn loaded. Dropped in this order (untorn mounts belong to the tests, gone by
/// then).
struct Fixture {
    install: BindMount,
    user: User,
    xfs: Mounted,
    template: PathBuf,
    _module: LoadedModule,
}

impl Fixture {
    fn new(env: &Env, install: &Path) -> Result<Self> {
        let user = User::lookup(USER)?;
        let install = BindMount::new(install)?;
        let xfs = Mounted::fresh(FsType::Xfs, &guest::scsi_debug_disk()?)?;
        let module = super::load_untorn(&env.modules_dir)?;
        let mut fixture = Self {
            install,
            user,
            template: PathBuf::new(),
            xfs,
            _module: module,
        };
        let template = fixture.xfs_dir("pg-template")?.join("data");
        let start = std::time::Instant::now();
        Cluster::initdb(&fixture, &template)?;
        println!("#   set-up: initdb {:.1}s", start.elapsed().as_secs_f64());
        fixture.template = template;
        Ok(fixture)
    }

    fn bin(&self, program: &str) -> PathBuf {
        self.install.dir.join("bin").join(program)
    }

    /// A PostgreSQL program, with a clean environment; as the user if `as_user`.
    fn command(&self, program: &str, as_user: bool, cwd: &Path) -> Command {
        let mut cmd = Command::new(self.bin(program));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LD_LIBRARY_PATH", self.install.dir.join("lib"))
            .env("LC_ALL", "C")
            .current_dir(cwd);
        if as_user {
            // std drops root's supplementary groups too.
            cmd.uid(self.user.uid).gid(self.user.gid);
        }
        cmd
    }

    /// A new directory `name` on the XFS, outside any untorn mount.
    fn xfs_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.xfs.path().join(name);
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }
}

/// Fails with the command's output unless it exited 0; returns its standard output.
fn checked(what: &str, out: std::io::Result<Output>) -> Result<String> {
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

/// A cluster made by initdb, run by the fixture's user; stopped (if running) and its socket
/// directory removed when dropped.
struct Cluster<'a> {
    fx: &'a Fixture,
    data: PathBuf,
    /// The socket directory and the server log, on the guest's temporary directory.
    run: PathBuf,
    running: bool,
}

impl<'a> Cluster<'a> {
    /// initdb (with data checksums) of a new data directory `data`.
    fn initdb(fx: &Fixture, data: &Path) -> Result<()> {
        fs::create_dir(data).with_context(|| format!("cannot create {}", data.display()))?;
        fx.user.own_dir(data)?;
        let out = fx
            .command("initdb", true, data)
            .arg("-D")
            .arg(data)
            .args(["-A", "trust", "-E", "UTF8", "--data-checksums", "--no-sync"])
            .arg("--no-instructions")
            .output();
        checked(&format!("initdb -D {}", data.display()), out).map(drop)
    }

    /// A new data directory `data`, a copy of the fixture's initdb'd one: its files are created
    /// (and its catalogs later opened) where `data` is, untorn or not. Times are not copied:
    /// setting a file's times through untorn writes its dirty data back first, a synchronous
    /// write per file (72 s instead of 25 s for the copy under TCG).
    fn init(fx: &'a Fixture, data: &Path) -> Result<Self> {
        let out = Command::new("cp")
            .args(["-R", "--preserve=mode,ownership"])
            .arg(&fx.template)
            .arg(data)
            .output();
        checked(
            &format!(
                "cp -R --preserve=mode,ownership {} {}",
                fx.template.display(),
                data.display()
            ),
            out,
        )?;
        let run = guest::scratch_dir("postgres-run")?;
        fx.user.own_dir(&run)?;
        Ok(Self {
            fx,
            data: data.to_path_buf(),
            run,
            running: false,
        })
    }

    /// pg_ctl start, with extra server options (`-c name=value ...`).
    fn start(&mut self, options: &str) -> Result<()> {
        let options = format!(
            "-k {} -c listen_addresses='' -c shared_buffers=16MB -c max_connections=10 {options}",
            self.run.display()
        );
        let out = self
            .fx
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
    fn stop(&mut self) -> Result<()> {
        let out = self
            .fx
            .command("pg_ctl", true, &self.run)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "600", "stop"])
            .output();
        let stopped = checked("pg_ctl stop", out);
        if stopped.is_ok() {
            self.running = false;
        }
        stopped.map(drop)
    }

    fn log_path(&self) -> PathBuf {
        self.run.join("server.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// One SQL command through psql (as root, connecting as the cluster's superuser, whose
    /// name is the user's); the output, unaligned and without headers, trimmed.
    fn sql(&self, sql: &str) -> Result<String> {
        let out = self
            .fx
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

    fn show(&self, setting: &str) -> Result<String> {
        self.sql(&format!("SHOW {setting}"))
    }

    /// Fails unless `SHOW setting` gives `want`.
    fn ensure_show(&self, setting: &str, want: &str) -> Result<()> {
        let got = self.show(setting)?;
        ensure!(got == want, "SHOW {setting}: {got:?}, expected {want:?}");
        Ok(())
    }

    /// The path of a relation's first segment file, relative to the data directory
    /// (`pg_relation_filepath`).
    fn relation_path(&self, relation: &str) -> Result<String> {
        let rel = self.sql(&format!("SELECT pg_relation_filepath('{relation}')"))?;
        ensure!(
            rel.starts_with("base/"),
            "pg_relation_filepath('{relation}'): {rel:?}"
        );
        Ok(rel)
    }

    /// The relation's first segment file.
    fn relation_file(&self, relation: &str) -> Result<PathBuf> {
        Ok(self.data.join(self.relation_path(relation)?))
    }

    /// The WAL segment file being written.
    fn wal_file(&self) -> Result<PathBuf> {
        let name = self.sql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")?;
        Ok(self.data.join("pg_wal").join(name))
    }

    /// Makes table `t` (with index `t_pkey`) of [`ROWS`] rows, then a checkpoint; returns its
    /// size in pages.
    fn make_table(&self) -> Result<u64> {
        self.sql("CREATE TABLE t (id int PRIMARY KEY, filler text)")?;
        self.sql(&format!(
            "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, {ROWS}) g"
        ))?;
        self.sql("CHECKPOINT")?;
        let pages: u64 = self
            .sql("SELECT pg_relation_size('t') / 8192")?
            .parse()
            .context("pg_relation_size")?;
        ensure!(pages > 0, "table t has no page");
        Ok(pages)
    }

    /// Rewrites every row and checkpoints: each page of `t` is written again.
    fn rewrite_table(&self) -> Result<()> {
        self.sql("UPDATE t SET filler = repeat('y', 200)")?;
        self.sql("CHECKPOINT")
            .map(drop)
            .context("checkpoint after the update")
    }

    /// The data reads back, amcheck finds the index sound, and the server logged no warning of
    /// the patch.
    fn ensure_sound(&self) -> Result<()> {
        let rows = self.sql("SELECT count(*) FROM t WHERE filler = repeat('y', 200)")?;
        ensure!(rows == ROWS.to_string(), "rows after the update: {rows}");
        self.sql("CREATE EXTENSION IF NOT EXISTS amcheck")?;
        self.sql("SELECT bt_index_check('t_pkey', true)")
            .context("amcheck")?;
        let log = self.log();
        ensure!(
            !log.contains(PATCH_WARNING),
            "the server warned about untorn:\n{log}"
        );
        Ok(())
    }

    /// Stops the server and runs `pg_checksums --check`: every page's checksum must match.
    fn stop_and_check_checksums(&mut self) -> Result<()> {
        self.stop()?;
        let out = self
            .fx
            .command("pg_checksums", true, &self.run)
            .args(["--check", "-D"])
            .arg(&self.data)
            .output();
        let report = checked("pg_checksums --check", out)?;
        ensure!(
            report
                .lines()
                .any(|l| l.split_whitespace().eq(["Bad", "checksums:", "0"])),
            "pg_checksums --check:\n{report}"
        );
        Ok(())
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        if self.running {
            if let Err(e) = self.stop() {
                println!("# warning: {e:#}");
                // Last resort, or the untorn mount under it could not be unmounted.
                let _ = self
                    .fx
                    .command("pg_ctl", true, &self.run)
                    .arg("-D")
                    .arg(&self.data)
                    .args(["-m", "immediate", "-w", "stop"])
                    .output();
            }
        }
        let _ = fs::remove_dir_all(&self.run);
    }
}

/// How much the counter `name` grew.
fn grew(before: &Counters, after: &Counters, name: &str) -> u64 {
    let get = |c: &Counters| c.get(name).copied().unwrap_or(0);
    get(after).wrapping_sub(get(before))
}

/// Fails unless rewriting table `t` of `pages` pages made at least that many untorn writes on
/// the mount: each 8 KiB page written back is one untorn (REQ_ATOMIC) write.
fn ensure_pages_untorn(cluster: &Cluster<'_>, mountpoint: &Path, pages: u64) -> Result<()> {
    let before = read_counters(mountpoint)?;
    cluster.rewrite_table()?;
    let after = read_counters(mountpoint)?;
    let untorn = grew(&before, &after, "untorn_writes");
    ensure!(
        untorn >= pages,
        "rewriting {pages} pages of t made {untorn} untorn writes (writethrough writes: {})",
        grew(&before, &after, "writethrough_writes")
    );
    println!("#   {pages} pages of t rewritten: {untorn} untorn writes");
    Ok(())
}

/// Makes table `t`; checks the `(mode, effective mode)` (uapi values) of the files of the table, its index
/// and a catalog (`relations`) and of the WAL segment (`wal`); rewrites the table, which must
/// write each page untorn on the mount at `mountpoint`; and checks that the data is sound.
fn ensure_covered(
    cluster: &Cluster<'_>,
    mountpoint: &Path,
    relations: (u32, u32),
    wal: (u32, u32),
) -> Result<()> {
    let pages = cluster.make_table()?;
    for relation in ["t", "t_pkey", "pg_class"] {
        let path = cluster.relation_file(relation)?;
        ensure_mode(
            &open_ro(&path)?,
            relations.0,
            relations.1,
            &format!("{relation} ({})", path.display()),
        )?;
    }
    let path = cluster.wal_file()?;
    ensure_mode(
        &open_ro(&path)?,
        wal.0,
        wal.1,
        &format!("WAL ({})", path.display()),
    )?;
    ensure_pages_untorn(cluster, mountpoint, pages)?;
    cluster.ensure_sound()
}

/// The patched server on untorn (`writethrough=marked`, the default): the relation files it
/// creates (table, index) and opens (a catalog) are in writethrough mode, WAL is not (not a
/// relation file); each page written back is an untorn write; the setting says so.
fn patched_on_untorn(fx: &Fixture) -> Result<()> {
    let src = fx.xfs_dir("pg-untorn")?;
    let upper = Mounted::mount(UNTORN, guest::path_str(&src)?, "")?;
    let mut cluster = Cluster::init(fx, &upper.path().join("data"))?;
    cluster.start("")?;
    cluster.ensure_show("untorn_writethrough", "on")?;
    cluster.ensure_show(
        "untorn_data_directory",
        "writethrough (untorn_writethrough, mount option writethrough=marked)",
    )?;
    ensure_covered(
        &cluster,
        upper.path(),
        (FileMode::WRITETHROUGH, FileMode::WRITETHROUGH),
        (FileMode::OFF, FileMode::OFF),
    )?;
    // The mode is the file's, stored on the lower file as the mode ioctl stores it.
    let lower_file = src.join("data").join(cluster.relation_path("t")?);
    let value = sys::getxattr(&lower_file, "trusted.untorn.mode").map_err(|e| {
        anyhow!(
            "{}: trusted.untorn.mode: {}",
            lower_file.display(),
            describe(&e)
        )
    })?;
    ensure!(
        value == b"writethrough",
        "{}: trusted.untorn.mode is {:?}",
        lower_file.display(),
        String::from_utf8_lossy(&value)
    );
    cluster.stop_and_check_checksums()
}

/// The same binaries with the data directory on plain XFS: the files are not touched (no mode
/// ioctl there, no xattr written), the server works and warns of nothing, and the setting says
/// the data directory is not on untorn.
fn patched_on_plain_xfs(fx: &Fixture) -> Result<()> {
    let dir = fx.xfs_dir("pg-plain")?;
    let mut cluster = Cluster::init(fx, &dir.join("data"))?;
    cluster.start("")?;
    cluster.ensure_show("untorn_writethrough", "on")?;
    cluster.ensure_show("untorn_data_directory", "not untorn")?;
    cluster.make_table()?;
    cluster.rewrite_table()?;
    cluster.ensure_sound()?;
    let table = cluster.relation_file("t")?;
    expect_err(
        sys::get_mode(&open_ro(&table)?),
        libc::ENOTTY,
        &format!("UNTORN_IOC_GET_MODE of {} on XFS", table.display()),
    )?;
    expect_err(
        sys::getxattr(&table, "trusted.untorn.mode"),
        libc::ENODATA,
        &format!("trusted.untorn.mode of {}", table.display()),
    )?;
    cluster.stop_and_check_checksums()
}

/// Without the patch's help: `untorn_writethrough = off` makes the patched server set nothing,
/// as an unpatched one; on an untorn mount with `writethrough=all` every file is written
/// through all the same (GET_MODE: mode off, effective writethrough), each page written back
/// is an untorn write, and the setting names the mount option. A remount to
/// `writethrough=marked` shows at once in the setting: nothing covers the files then.
fn unpatched_writethrough_all(fx: &Fixture) -> Result<()> {
    let src = fx.xfs_dir("pg-all")?;
    let upper = Mounted::mount(UNTORN, guest::path_str(&src)?, "writethrough=all")?;
    let mut cluster = Cluster::init(fx, &upper.path().join("data"))?;
    cluster.start("-c untorn_writethrough=off")?;
    cluster.ensure_show("untorn_writethrough", "off")?;
    cluster.ensure_show(
        "untorn_data_directory",
        "writethrough (mount option writethrough=all)",
    )?;
    ensure_covered(
        &cluster,
        upper.path(),
        (FileMode::OFF, FileMode::WRITETHROUGH),
        (FileMode::OFF, FileMode::WRITETHROUGH),
    )?;
    sys::mount(
        Path::new("none"),
        upper.path(),
        UNTORN,
        libc::MS_REMOUNT,
        "writethrough=marked",
    )
    .map_err(|e| anyhow!("remount,writethrough=marked: {}", describe(&e)))?;
    cluster.ensure_show(
        "untorn_data_directory",
        "not written through (untorn_writethrough is off)",
    )?;
    let table = cluster.relation_file("t")?;
    ensure_mode(
        &open_ro(&table)?,
        FileMode::OFF,
        FileMode::OFF,
        "t after remount,writethrough=marked",
    )?;
    cluster.stop_and_check_checksums()
}
