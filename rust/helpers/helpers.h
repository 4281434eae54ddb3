/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C wrappers for `static inline` kernel functions and macros that untorn's Rust code calls.
 *
 * Rust cannot call a `static inline` function, and the kernel's own rust/helpers/ cover only
 * what in-tree Rust uses. Each wrapper here is one call (or one field access of a type that is
 * opaque to Rust), named untorn_helper_<function>; our bindgen run (tools/testing/gen-bindings)
 * declares them to Rust in `kernel_ext::bindings`.
 */
#ifndef UNTORN_RUST_HELPERS_H
#define UNTORN_RUST_HELPERS_H

#include <linux/backing-dev.h>
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/bvec.h>
#include <linux/cred.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/mount.h>
#include <linux/namei.h>
#include <linux/pagemap.h>
#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>
#include <linux/seqlock.h>
#include <linux/slab.h>
#include <linux/sched/mm.h>
#include <linux/statfs.h>
#include <linux/uio.h>
#include <linux/kthread.h>
#include <linux/sizes.h>
#include <linux/workqueue.h>

/* The values of the writethrough= mount option (lib/untorn_logic WritethroughPolicy). */
#define UNTORN_WRITETHROUGH_NONE 0
#define UNTORN_WRITETHROUGH_MARKED 1
#define UNTORN_WRITETHROUGH_ALL 2

/* Implemented in Rust (fs/untorn), called by the C mount code (fs/untorn/untorn_mount.c). */
int untorn_fill_super(struct super_block *sb, const struct path *lower, int writethrough,
		      bool silent);
int untorn_reconfigure(struct super_block *sb, int writethrough, unsigned int sb_flags,
		       unsigned int sb_flags_mask);
void untorn_kill_sb(struct super_block *sb);
int untorn_helper_register_filesystem(void);
void untorn_helper_unregister_filesystem(void);

void untorn_helper_iov_iter_ubuf(struct iov_iter *i, unsigned int direction, void __user *buf,
				 size_t count);
size_t untorn_helper_iov_iter_count(const struct iov_iter *i);

void untorn_helper_cap_lower_sys_resource(struct cred *cred);
const struct cred *untorn_helper_override_creds(const struct cred *cred);
const struct cred *untorn_helper_revert_creds(const struct cred *cred);
const struct cred *untorn_helper_current_cred(void);

bool untorn_helper_is_idmapped_mnt(struct vfsmount *mnt);
int untorn_helper_super_setup_bdi(struct super_block *sb);
void untorn_helper_kstatfs_set_type(struct kstatfs *buf, long type);
void untorn_helper_kstatfs_set_space(struct kstatfs *buf, u64 bsize, u64 blocks, u64 bfree,
				     u64 files, u64 ffree);

loff_t untorn_helper_i_size_read(const struct inode *inode);
void untorn_helper_i_size_write(struct inode *inode, loff_t size);
unsigned int untorn_helper_i_blocksize(const struct inode *inode);
bool untorn_helper_inode_is_new(struct inode *inode);
struct inode *untorn_helper_folio_host(struct folio *folio);
struct inode *untorn_helper_readahead_host(struct readahead_control *rac);
struct folio *untorn_helper_readahead_folio(struct readahead_control *rac);
struct dentry *untorn_helper_file_dentry(const struct file *file);
void untorn_helper_inode_times(const struct inode *inode, struct timespec64 *mtime,
			       struct timespec64 *ctime);
void untorn_helper_copy_attr(struct inode *dest, const struct inode *src);
void untorn_helper_inode_lock(struct inode *inode);
void untorn_helper_inode_unlock(struct inode *inode);

const char *untorn_helper_posix_acl_xattr_name(int type);
struct dentry *untorn_helper_dget(struct dentry *dentry);
void untorn_helper_end_creating(struct dentry *child);
void untorn_helper_end_removing(struct dentry *child);
bool untorn_helper_d_unhashed(const struct dentry *dentry);

unsigned int untorn_helper_cleaning_upper_begin(void);
void untorn_helper_cleaning_upper_end(unsigned int saved);
void untorn_helper_init_sync_kiocb(struct kiocb *kiocb, struct file *file);
ssize_t untorn_helper_generic_write_sync(struct kiocb *iocb, ssize_t count);

void untorn_helper_bvec_set_folio(struct bio_vec *bv, struct folio *folio, unsigned int len,
				  size_t offset);
void untorn_helper_folio_get(struct folio *folio);
void untorn_helper_folio_put(struct folio *folio);
loff_t untorn_helper_folio_pos(const struct folio *folio);
size_t untorn_helper_folio_size(const struct folio *folio);
bool untorn_helper_folio_test_uptodate(const struct folio *folio);
void untorn_helper_folio_mark_uptodate(struct folio *folio);
void untorn_helper_folio_zero_segment(struct folio *folio, size_t start, size_t end);
void untorn_helper_mapping_set_error(struct address_space *mapping, int error);
void untorn_helper_mapping_set_large_folios(struct address_space *mapping);
struct folio *untorn_helper_filemap_lock_folio(struct address_space *mapping, pgoff_t index);
struct folio *untorn_helper_write_begin_get_folio(struct address_space *mapping, loff_t pos,
						  size_t len);

/* Part 1 fixes: the access time, set-group-ID after setfacl. */
void untorn_helper_file_accessed(struct file *file);
void untorn_helper_touch_atime(struct inode *upper, struct file *lower);
bool untorn_helper_acl_kills_sgid(struct inode *inode, int type);

/* Part 2: the writethrough path (see Documentation/filesystems/untorn.rst). */
bool untorn_helper_current_has_mm(void);
long untorn_helper_bounce_map(size_t len);
struct mm_struct *untorn_helper_current_mm(void);
void untorn_helper_mmgrab(struct mm_struct *mm);
void untorn_helper_mmdrop(struct mm_struct *mm);
bool untorn_helper_mm_alive(struct mm_struct *mm);
bool untorn_helper_bounce_still_mapped(unsigned long addr, struct page **pages,
				       unsigned int npages);
int untorn_helper_bounce_release_foreign(struct mm_struct *mm, unsigned long addr, size_t len,
					 struct page **pages, unsigned int npages);
void untorn_helper_bounce_flush_releases(void);
int untorn_helper_bounce_init(void);
void untorn_helper_bounce_exit(void);
/* The most pages a cached bounce buffer has (64 KiB). */
#define UNTORN_BOUNCE_CACHE_PAGES (SZ_64K / PAGE_SIZE)
size_t untorn_helper_bounce_fill_at(struct page **pages, size_t offset, size_t len,
				    struct iov_iter *from);
void untorn_helper_bounce_from_folio(struct folio *folio, size_t folio_offset,
				     struct page **pages, size_t bounce_offset, size_t len);
void untorn_helper_bounce_to_folio(struct folio *folio, size_t folio_offset, struct page **pages,
				   size_t bounce_offset, size_t len);
void untorn_helper_folio_wait_writeback(struct folio *folio);
bool untorn_helper_folio_test_dirty(struct folio *folio);
void untorn_helper_flush_dcache_folio(struct folio *folio);
bool untorn_helper_inode_is_nosec(struct inode *inode);
void untorn_helper_inode_lock_shared(struct inode *inode);
void untorn_helper_inode_unlock_shared(struct inode *inode);
void untorn_helper_iov_iter_truncate(struct iov_iter *i, size_t count);
void untorn_helper_iov_iter_reexpand(struct iov_iter *i, size_t count);

/*
 * Publication slots: a writethrough write copies new data into up-to-date folios inside one,
 * and readers of the same window read again if a copy ran meanwhile.
 */
struct untorn_publication;
#define UNTORN_PUBLICATION_SLOTS 256
struct untorn_publication *untorn_helper_publication_alloc(void);
void untorn_helper_publication_free(struct untorn_publication *slots);
unsigned int untorn_helper_publication_read_begin(struct untorn_publication *slots,
						  unsigned int slot);
bool untorn_helper_publication_read_retry(struct untorn_publication *slots, unsigned int slot,
					  unsigned int seq);
void untorn_helper_publication_write_begin(struct untorn_publication *slots, unsigned int slot);
void untorn_helper_publication_write_end(struct untorn_publication *slots, unsigned int slot);

vm_fault_t untorn_helper_fault(struct vm_fault *vmf);
vm_fault_t untorn_helper_page_mkwrite(struct vm_fault *vmf);

/* The block device side (rust/kernel_ext/block.rs, used by samples/rust/tornblk). */
const struct block_device_operations *untorn_helper_bdev_fops(void);
size_t untorn_helper_rq_copy_to_buf(struct request *rq, void *buf, size_t len);
size_t untorn_helper_rq_copy_from_buf(struct request *rq, const void *buf, size_t len);
unsigned int untorn_helper_memalloc_noio_save(void);
void untorn_helper_memalloc_noio_restore(unsigned int flags);
/* A block device as a user of it: raw mode (rust/kernel_ext/bio.rs). */
int untorn_fill_super_raw(struct super_block *sb, const char *source, int writethrough,
			  bool silent);
struct bio *untorn_helper_bio_alloc(struct block_device *bdev, unsigned short nr_vecs,
				    blk_opf_t opf);
loff_t untorn_helper_bdev_nr_bytes(struct block_device *bdev);
unsigned int untorn_helper_bdev_logical_block_size(struct block_device *bdev);
void untorn_helper_bdev_atomic_limits(struct block_device *bdev, unsigned int *unit_min,
				      unsigned int *unit_max, unsigned int *max,
				      unsigned int *boundary);
void untorn_helper_inode_set_immutable(struct inode *inode);

#endif /* UNTORN_RUST_HELPERS_H */
