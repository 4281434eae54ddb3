// SPDX-License-Identifier: GPL-2.0

//! PostgreSQL on untorn (issue 8, part 1): the PostgreSQL that `tools/testing/build-postgres`
//! builds with `tools/postgres/*.patch` puts its relation files on untorn in writethrough mode,
//! leaves files on other filesystems alone, and says which in `SHOW untorn_data_directory`;
//! PostgreSQL built without the patch is covered by the `writethrough=all` mount option.
//!
//! The installations are the directories in `UNTORN_POSTGRES` and `UNTORN_POSTGRES_UNPATCHED`,
//! which `tools/testing/vm-run` sets to the cached builds when there are some; without them the
//! tests are skipped, with the reason. The
//! clusters run as `nobody` (initdb and the server refuse root), from a bind mount of the
//! installation (the cache may be under a home directory `nobody` cannot enter), on a fresh XFS
//! on the `scsi_debug` disk: through untorn mounted over a directory of it, or directly.

use super::{
    stacking::UNTORN,
    writethrough::{ensure_mode, expect_err, open_ro, read_counters, set_mode, Counters},
    Env, Skip, Test,
};
use crate::{
    guest::{self, FsType, LoadedModule, Mounted},
    postgres::{self, Cluster, Install},
    sys::{self, describe},
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use untorn_logic::mount_options::FileMode;

/// The fixture's group.
const GROUP: &str = "postgres";
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
                let install = install_dir(postgres::INSTALL_VAR)?;
                let fixture = env.fixture(GROUP, |env| Fixture::new(env, &install))?;
                f(&fixture)
            })
        })
        .collect()
}

/// The installation named by the environment variable `var`, or a [`Skip`] saying how to get
/// one.
fn install_dir(var: &str) -> Result<PathBuf> {
    postgres::install_from_env(var)?.map_err(|why| Skip(why).into())
}

/// What the tests share: the installation, a fresh XFS on the scsi_debug disk and untorn
/// loaded. Dropped in this order (untorn mounts belong to the tests, gone by then).
struct Fixture {
    pg: Install,
    xfs: Mounted,
    _module: LoadedModule,
}

impl Fixture {
    fn new(env: &Env, install: &Path) -> Result<Self> {
        Ok(Self {
            pg: Install::new(install)?,
            xfs: Mounted::fresh(FsType::Xfs, &guest::scsi_debug_disk()?)?,
            _module: super::load_untorn(&env.modules_dir)?,
        })
    }

    /// A new directory `name` on the XFS, outside any untorn mount.
    fn xfs_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.xfs.path().join(name);
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// A cluster in a new data directory `data`, a copy of the installation's template: its
    /// files are created (and its catalogs later opened) where `data` is, untorn or not.
    fn cluster(&self, data: &Path) -> Result<Cluster<'_>> {
        cluster_of(&self.pg, data)
    }
}

/// The same, of the installation `pg`.
fn cluster_of<'a>(pg: &'a Install, data: &Path) -> Result<Cluster<'a>> {
    pg.new_data_dir(data)?;
    Cluster::new(pg, data)
}

/// Makes table `t` (with index `t_pkey`) of [`ROWS`] rows, then a checkpoint; returns its size
/// in pages.
fn make_table(cluster: &Cluster<'_>) -> Result<u64> {
    cluster.sql("CREATE TABLE t (id int PRIMARY KEY, filler text)")?;
    cluster.sql(&format!(
        "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, {ROWS}) g"
    ))?;
    cluster.sql("CHECKPOINT")?;
    let pages: u64 = cluster
        .sql("SELECT pg_relation_size('t') / 8192")?
        .parse()
        .context("pg_relation_size")?;
    ensure!(pages > 0, "table t has no page");
    Ok(pages)
}

/// Rewrites every row and checkpoints: each page of `t` is written again.
fn rewrite_table(cluster: &Cluster<'_>) -> Result<()> {
    cluster.sql("UPDATE t SET filler = repeat('y', 200)")?;
    cluster
        .sql("CHECKPOINT")
        .map(drop)
        .context("checkpoint after the update")
}

/// The data reads back, amcheck finds the index sound, and the server logged no warning of the
/// patch.
fn ensure_sound(cluster: &Cluster<'_>) -> Result<()> {
    let rows = cluster.sql("SELECT count(*) FROM t WHERE filler = repeat('y', 200)")?;
    ensure!(rows == ROWS.to_string(), "rows after the update: {rows}");
    cluster.sql("CREATE EXTENSION IF NOT EXISTS amcheck")?;
    cluster
        .sql("SELECT bt_index_check('t_pkey', true)")
        .context("amcheck")?;
    let log = cluster.log();
    ensure!(
        !log.contains(PATCH_WARNING),
        "the server warned about untorn:\n{log}"
    );
    Ok(())
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
    rewrite_table(cluster)?;
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
    let pages = make_table(cluster)?;
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
    ensure_sound(cluster)
}

/// The patched server on untorn (`writethrough=marked`, the default): the relation files it
/// creates (table, index, a segment past the first) and opens (a catalog, that segment) are in
/// writethrough mode, WAL is not (not a relation file); each page written back is an untorn
/// write; the setting says so.
fn patched_on_untorn(fx: &Fixture) -> Result<()> {
    let src = fx.xfs_dir("pg-untorn")?;
    let upper = Mounted::mount(UNTORN, guest::path_str(&src)?, "")?;
    let mut cluster = fx.cluster(&upper.path().join("data"))?;
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
    ensure_second_segment_covered(&mut cluster, upper.path())?;
    // The setting follows the mount's policy, read when shown, and the server's setting.
    for (policy, shown) in [
        (
            "writethrough=all",
            "writethrough (mount option writethrough=all)",
        ),
        (
            "writethrough=none",
            "not written through (mount option writethrough=none)",
        ),
        (
            "writethrough=marked",
            "writethrough (untorn_writethrough, mount option writethrough=marked)",
        ),
    ] {
        remount(upper.path(), policy)?;
        cluster.ensure_show("untorn_data_directory", shown)?;
    }
    cluster.sql("ALTER SYSTEM SET untorn_writethrough = off")?;
    cluster.sql("SELECT pg_reload_conf()")?;
    // The postmaster reloads on its signal, a moment later.
    let shown = "not written through (untorn_writethrough is off)";
    for _ in 0..50 {
        if cluster.show("untorn_data_directory")? == shown {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cluster.ensure_show("untorn_data_directory", shown)?;
    cluster.stop_and_check_checksums()
}

/// Blocks of a relation segment file (`RELSEG_SIZE`, 1 GiB of 8 KiB pages, the default).
const SEGMENT_BLOCKS: u64 = 131_072;
/// Rows inserted into the second segment's table: some 6 pages, more than the free space of
/// the first segment's first and last page together.
const SEGMENT_ROWS: u32 = 200;

/// Relations over 1 GiB are split into segment files `<relfilenode>.N`, created and opened by
/// `_mdfd_openseg`, which the patch covers too. Table `s` gets a first segment of exactly
/// 1 GiB while the server is stopped (a sparse extension: pages of zeros are new pages to
/// PostgreSQL), so that inserting rows creates `.1`, which must be in writethrough mode and
/// written untorn. Then with `.1`'s mode cleared and the server restarted, reading it again
/// (a TID range scan: no 1 GiB scan) must set the mode again. The table is dropped after.
fn ensure_second_segment_covered(cluster: &mut Cluster<'_>, mountpoint: &Path) -> Result<()> {
    cluster.sql("CREATE TABLE s (id int, filler text) WITH (autovacuum_enabled = off)")?;
    cluster.sql("INSERT INTO s VALUES (0, 'first')")?;
    let first = cluster.relation_file("s")?;
    cluster.stop()?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .and_then(|f| f.set_len(SEGMENT_BLOCKS * 8192))
        .with_context(|| format!("extending {} to 1 GiB", first.display()))?;
    cluster.start("")?;
    cluster.sql(&format!(
        "INSERT INTO s SELECT g, repeat('s', 200) FROM generate_series(1, {SEGMENT_ROWS}) g"
    ))?;
    let in_second = format!("SELECT count(*) FROM s WHERE ctid >= '({SEGMENT_BLOCKS},0)'");
    let rows = cluster.sql(&in_second)?;
    ensure!(
        rows.parse::<u32>().is_ok_and(|n| n > 0),
        "rows of s in its second segment: {rows}"
    );
    let second = PathBuf::from(format!("{}.1", first.display()));
    let what = format!("the second segment {}", second.display());
    ensure_mode(
        &open_ro(&second)?,
        FileMode::WRITETHROUGH,
        FileMode::WRITETHROUGH,
        &format!("{what}, created"),
    )?;
    let before = read_counters(mountpoint)?;
    cluster.sql(&format!(
        "UPDATE s SET filler = repeat('t', 200) WHERE ctid >= '({SEGMENT_BLOCKS},0)'"
    ))?;
    cluster.sql("CHECKPOINT")?;
    let untorn = grew(&before, &read_counters(mountpoint)?, "untorn_writes");
    ensure!(
        untorn > 0,
        "rewriting the rows of {what} made no untorn write"
    );

    cluster.stop()?;
    set_mode(&open_ro(&second)?, FileMode::OFF, &what)?;
    cluster.start("")?;
    let again = cluster.sql(&in_second)?;
    ensure!(
        again == rows,
        "rows of s in {what} after a restart: {again}, before: {rows}"
    );
    ensure_mode(
        &open_ro(&second)?,
        FileMode::WRITETHROUGH,
        FileMode::WRITETHROUGH,
        &format!("{what}, opened again"),
    )?;
    println!("#   second segment: {rows} rows, {untorn} untorn writes rewriting them");
    cluster.sql("DROP TABLE s")?;
    Ok(())
}

/// `mount -o remount,OPTIONS` of the untorn mount at `mountpoint`.
fn remount(mountpoint: &Path, options: &str) -> Result<()> {
    sys::mount(
        Path::new("none"),
        mountpoint,
        UNTORN,
        libc::MS_REMOUNT,
        options,
    )
    .map_err(|e| anyhow!("remount,{options}: {}", describe(&e)))
}

/// The same binaries with the data directory on plain XFS: the files are not touched (no mode
/// ioctl there, no xattr written), the server works and warns of nothing, and the setting says
/// the data directory is not on untorn.
fn patched_on_plain_xfs(fx: &Fixture) -> Result<()> {
    let dir = fx.xfs_dir("pg-plain")?;
    let mut cluster = fx.cluster(&dir.join("data"))?;
    cluster.start("")?;
    cluster.ensure_show("untorn_writethrough", "on")?;
    cluster.ensure_show("untorn_data_directory", "not untorn")?;
    make_table(&cluster)?;
    rewrite_table(&cluster)?;
    ensure_sound(&cluster)?;
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

/// PostgreSQL without our patch (`build-postgres --unpatched`), which knows nothing of untorn:
/// on an untorn mount with `writethrough=all` every file is written through all the same
/// (GET_MODE: mode off, effective writethrough) and each page written back is an untorn write;
/// after a remount to `writethrough=marked` nothing covers the files.
fn unpatched_writethrough_all(fx: &Fixture) -> Result<()> {
    let unpatched = Install::new(&install_dir(postgres::UNPATCHED_VAR)?)?;
    let src = fx.xfs_dir("pg-all")?;
    let upper = Mounted::mount(UNTORN, guest::path_str(&src)?, "writethrough=all")?;
    let mut cluster = cluster_of(&unpatched, &upper.path().join("data"))?;
    cluster.start("")?;
    match cluster.show("untorn_writethrough") {
        Err(e) if format!("{e:#}").contains("unrecognized configuration parameter") => {}
        other => bail!("SHOW untorn_writethrough on the unpatched server: {other:?}"),
    }
    ensure_covered(
        &cluster,
        upper.path(),
        (FileMode::OFF, FileMode::WRITETHROUGH),
        (FileMode::OFF, FileMode::WRITETHROUGH),
    )?;
    remount(upper.path(), "writethrough=marked")?;
    let table = cluster.relation_file("t")?;
    ensure_mode(
        &open_ro(&table)?,
        FileMode::OFF,
        FileMode::OFF,
        "t after remount,writethrough=marked",
    )?;
    cluster.stop_and_check_checksums()
}
