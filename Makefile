# SPDX-License-Identifier: GPL-2.0
#
# untorn: the commands a user runs. Everything is built against our own test kernel, which is
# built once and cached outside the repo (see tools/testing/lib.sh for the cache layout).
#
#   make              build the modules (and the test kernel, if missing) and the tool
#   make check        install what is missing, build everything, run every test
#   make bench        the benchmark in the `bench` flavour guest (about 9 minutes); prints the
#                     table, last the report directory (BENCH_DEVICE=scsi_debug|nvme|tornblk|
#                     scsi_debug:PARAMS, BENCH_LOWER=xfs|ext4|xfs,ext4, BENCH_MATRIX=quick|
#                     default|full, BENCH_ARGS=...; see tools/testing/run-bench)
#   make pgbench      PostgreSQL's pgbench in the `bench` flavour guest: XFS with full_page_writes
#                     on, off, and untorn over XFS with it off (about 14 minutes); prints the
#                     table, last the report directory (PGBENCH_ARGS=..., PGBENCH_REPORT=DIR;
#                     see tools/testing/run-pgbench)
#   make pressure     the memory-pressure tests (about 30 minutes under TCG)
#   make exercise     a long run of the data-integrity exerciser (EXERCISE_DURATION, default
#                     30m; EXERCISE_FS=xfs|ext4; SEED=n to replay a run)
#   make crash        the power-cut campaign in the test guest (CUTS=N untorn cuts, default
#                     2000, over XFS and ext4, RAW_CUTS=N in raw mode, default 500, with both
#                     negative controls of each; SEED=n to replay)
#   make crash-postgres  the PostgreSQL crash test: pgbench with full_page_writes=off on
#                     untorn, cut at random (PG_CUTS=N, default 30, about a minute each under
#                     TCG), and the control on plain XFS (PG_CONTROL_CUTS, default 20); SEED=n
#   make postgres     build PostgreSQL 17 into the cache without and with tools/postgres/*.patch
#                     (about 4 minutes each cold; make check does it too); prints the install
#                     directories, the patched one last
#   make CLIPPY=1     build the modules with clippy
#   make rust-analyzer  write rust-project.json for the kernel-side Rust
#
# Variables: FLAVOUR=test|bench (default test), KDIR=<a 7.3 kernel built with CONFIG_RUST=y>,
# UNTORN_CACHE=<cache directory>.

FLAVOUR ?= test
TESTING := tools/testing

.PHONY: all modules tool deps check bench pgbench crash crash-postgres exercise pressure postgres rust-analyzer fmt clean distclean

all: modules tool

deps:
	$(TESTING)/install-deps

modules:
	$(TESTING)/build-modules $(FLAVOUR) >/dev/null

tool:
	cargo build --release --locked

check:
	$(TESTING)/run-checks

bench:
	$(TESTING)/run-bench

pgbench:
	$(TESTING)/run-pgbench

postgres:
	$(TESTING)/build-postgres --unpatched
	$(TESTING)/build-postgres

pressure:
	$(TESTING)/vm-run --device scsi_debug --timeout 3600 -- untorn check --pressure --filter pressure/

# A cut costs seconds under TCG: the guest's time limit allows a minute per cut.
CUTS ?= 2000
RAW_CUTS ?= 500
crash:
	$(TESTING)/vm-run --timeout $$(( ($(CUTS) + $(RAW_CUTS)) * 60 + 1800 )) -- \
		untorn crash --lower xfs,ext4,raw --cuts $(CUTS) --raw-cuts $(RAW_CUTS) \
		$(if $(SEED),--seed $(SEED))

PG_CUTS ?= 30
PG_CONTROL_CUTS ?= 20
crash-postgres:
	UNTORN_POSTGRES=$$($(TESTING)/build-postgres) && export UNTORN_POSTGRES && \
	$(TESTING)/vm-run --timeout $$(( ($(PG_CUTS) + $(PG_CONTROL_CUTS)) * 300 + 900 )) -- \
		untorn crash-postgres --cuts $(PG_CUTS) --control-cuts $(PG_CONTROL_CUTS) \
		$(if $(SEED),--seed $(SEED))

EXERCISE_DURATION ?= 30m
EXERCISE_FS ?= xfs
exercise:
	$(TESTING)/run-exercise $(EXERCISE_FS) $(EXERCISE_DURATION) $(SEED)

rust-analyzer:
	$(TESTING)/build-modules $(FLAVOUR) rust-analyzer >/dev/null

fmt:
	cargo fmt --all
	$(TESTING)/rustfmt-kernel

clean:
	cargo clean
	rm -f rust/bindings/bindings_generated.rs rust-project.json

# Also forget the cached kernels and modules (not the downloaded source or tools).
distclean: clean
	bash -c 'source $(TESTING)/lib.sh && rm -rf "$$UNTORN_CACHE/kernel" "$$UNTORN_CACHE/modules"'
