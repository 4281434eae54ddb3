# SPDX-License-Identifier: GPL-2.0
# Settings shared by the scripts in tools/testing/. Source it; do not run it.
#
# Everything built or downloaded lives in the cache, outside the repository:
#   UNTORN_CACHE   default: ${XDG_CACHE_HOME:-$HOME/.cache}/untorn
#     tools/       bindgen and the virtme-ng virtual environment
#     src/         the unpacked kernel source, one directory per Debian version
#     kernel/      built kernels, one directory per (source, flavour config, rustc, bindgen) key
#     postgres/    PostgreSQL built by build-postgres, one directory per (source, patch) key
#     kvm-probe    whether KVM can boot our kernels on this machine (see vm-run)
# Remove the directory to start from scratch.

UNTORN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
UNTORN_CACHE=${UNTORN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/untorn}
UNTORN_TOOLS=$UNTORN_CACHE/tools

# The Debian package the test kernel is built from. When the archive no longer has this exact
# version, fetch-kernel-source takes the newest 7.3.x it has and says so.
KERNEL_PACKAGE=linux-source-7.3
KERNEL_PACKAGE_VERSION=7.3.4-1~bpo13+1

# The Debian source package PostgreSQL is built from (build-postgres), from trixie's deb-src.
# When the archive no longer has this exact version, build-postgres takes the newest 17.x.
POSTGRES_PACKAGE=postgresql-17
POSTGRES_PACKAGE_VERSION=17.11-0+deb13u1

BINDGEN_VERSION=0.72.1
VIRTME_NG_VERSION=1.42

export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
export PATH="$UNTORN_TOOLS/bin:$UNTORN_TOOLS/venv/bin:$HOME/.cargo/bin:$PATH"

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }
