/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Input of our own bindgen run (tools/testing/gen-bindings): what `kernel::bindings` lacks.
 *
 * Macros with casts such as REQ_ATOMIC are invisible to bindgen; a `const` variable initialised
 * from the macro is not (the same trick as the kernel's RUST_CONST_HELPER_*). These variables
 * are read only by bindgen, never compiled.
 */

#include <linux/blk_types.h>
#include <linux/blkdev.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/mount.h>
#include <linux/uio.h>

#include "rust/helpers/helpers.h"

const blk_opf_t UNTORN_REQ_ATOMIC = REQ_ATOMIC;
const int UNTORN_IOCB_ATOMIC = IOCB_ATOMIC;
const int UNTORN_IOCB_DSYNC = IOCB_DSYNC;
const int UNTORN_IOCB_SYNC = IOCB_SYNC;
const int UNTORN_IOCB_APPEND = IOCB_APPEND;
const int UNTORN_IOCB_NOWAIT = IOCB_NOWAIT;

/* The most pages of a cached bounce buffer (rust/kernel_ext/bounce.rs). */
const unsigned int UNTORN_BOUNCE_CACHE_MAX_PAGES = UNTORN_BOUNCE_CACHE_PAGES;

/* Request flags and queue features for the block device side (rust/kernel_ext/block.rs). */
const blk_opf_t UNTORN_REQ_FUA = REQ_FUA;
const blk_opf_t UNTORN_REQ_PREFLUSH = REQ_PREFLUSH;
const blk_opf_t UNTORN_REQ_OP_MASK = REQ_OP_MASK;
const blk_features_t UNTORN_BLK_FEAT_WRITE_CACHE = BLK_FEAT_WRITE_CACHE;
const blk_features_t UNTORN_BLK_FEAT_FUA = BLK_FEAT_FUA;
const blk_features_t UNTORN_BLK_FEAT_ATOMIC_WRITES = BLK_FEAT_ATOMIC_WRITES;

/* Opening and writing a block device as its user (rust/kernel_ext/bio.rs). */
const blk_opf_t UNTORN_REQ_SYNC = REQ_SYNC;
const blk_mode_t UNTORN_BLK_OPEN_READ = BLK_OPEN_READ;
const blk_mode_t UNTORN_BLK_OPEN_WRITE = BLK_OPEN_WRITE;
const blk_mode_t UNTORN_BLK_OPEN_RESTRICT_WRITES = BLK_OPEN_RESTRICT_WRITES;

/* The uapi header, so that a KUnit test can check lib/untorn_logic/src/uapi.rs against it. */
#include "include/uapi/linux/untorn.h"

const unsigned int UNTORN_HDR_IOC_GET_MODE = UNTORN_IOC_GET_MODE;
const unsigned int UNTORN_HDR_IOC_SET_MODE = UNTORN_IOC_SET_MODE;
const unsigned long UNTORN_HDR_MODE_SIZE = sizeof(struct untorn_mode);

/* Flags that are macros with casts or BIT(). */
const unsigned long UNTORN_SB_RDONLY = SB_RDONLY;
const unsigned long UNTORN_SB_KERNMOUNT = SB_KERNMOUNT;
const unsigned long UNTORN_SB_POSIXACL = SB_POSIXACL;
const unsigned long UNTORN_SB_NOSEC = SB_NOSEC;
const unsigned int UNTORN_FMODE_WRITE = (__force unsigned int)FMODE_WRITE;
const unsigned int UNTORN_FMODE_CAN_ODIRECT = (__force unsigned int)FMODE_CAN_ODIRECT;
const unsigned int UNTORN_FMODE_CAN_ATOMIC_WRITE = (__force unsigned int)FMODE_CAN_ATOMIC_WRITE;
const unsigned int UNTORN_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int UNTORN_MNT_READONLY = MNT_READONLY;
