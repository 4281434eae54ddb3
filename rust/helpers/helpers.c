// SPDX-License-Identifier: GPL-2.0
/*
 * C wrappers for `static inline` kernel functions; see helpers.h. Each module that needs them
 * compiles this file into its own object (see e.g. fs/untorn/untorn_helpers.c), so the symbols
 * stay private to that module.
 */

#include "helpers.h"

void untorn_helper_iov_iter_ubuf(struct iov_iter *i, unsigned int direction, void __user *buf,
				 size_t count)
{
	iov_iter_ubuf(i, direction, buf, count);
}

size_t untorn_helper_iov_iter_count(const struct iov_iter *i)
{
	return iov_iter_count(i);
}

void untorn_helper_cap_lower_sys_resource(struct cred *cred)
{
	cap_lower(cred->cap_effective, CAP_SYS_RESOURCE);
}

const struct cred *untorn_helper_override_creds(const struct cred *cred)
{
	return override_creds(cred);
}

const struct cred *untorn_helper_revert_creds(const struct cred *cred)
{
	return revert_creds(cred);
}

const struct cred *untorn_helper_current_cred(void)
{
	return current_cred();
}

bool untorn_helper_is_idmapped_mnt(struct vfsmount *mnt)
{
	return is_idmapped_mnt(mnt);
}

/* Our share of the dirty threshold, in percent (see untorn.rst, "Writeback"). */
#define UNTORN_BDI_MAX_RATIO 10

int untorn_helper_super_setup_bdi(struct super_block *sb)
{
	int err = super_setup_bdi(sb);

	if (err)
		return err;
	/*
	 * Writeback goes through the lower, one synchronous write at a time, so few of our folios
	 * are ever under writeback and reclaim cannot wait for them: throttle writers against our
	 * own limit, kept small, as FUSE does. An administrator can raise it in
	 * /sys/class/bdi/untorn-N/max_ratio.
	 */
	sb->s_bdi->capabilities |= BDI_CAP_STRICTLIMIT;
	return bdi_set_max_ratio(sb->s_bdi, UNTORN_BDI_MAX_RATIO);
}

void untorn_helper_kstatfs_set_type(struct kstatfs *buf, long type)
{
	buf->f_type = type;
}

void untorn_helper_kstatfs_set_space(struct kstatfs *buf, u64 bsize, u64 blocks, u64 bfree,
				     u64 files, u64 ffree)
{
	buf->f_bsize = bsize;
	buf->f_frsize = bsize;
	buf->f_blocks = blocks;
	buf->f_bfree = bfree;
	buf->f_bavail = bfree;
	buf->f_files = files;
	buf->f_ffree = ffree;
}

loff_t untorn_helper_i_size_read(const struct inode *inode)
{
	return i_size_read(inode);
}

void untorn_helper_i_size_write(struct inode *inode, loff_t size)
{
	i_size_write(inode, size);
}

unsigned int untorn_helper_i_blocksize(const struct inode *inode)
{
	return i_blocksize(inode);
}

bool untorn_helper_inode_is_new(struct inode *inode)
{
	return inode_state_read_once(inode) & I_NEW;
}

struct inode *untorn_helper_folio_host(struct folio *folio)
{
	return folio->mapping->host;
}

struct inode *untorn_helper_readahead_host(struct readahead_control *rac)
{
	return rac->mapping->host;
}

/* The next folio of a readahead request, locked, with a reference the caller drops. */
struct folio *untorn_helper_readahead_folio(struct readahead_control *rac)
{
	return __readahead_folio(rac);
}

struct dentry *untorn_helper_file_dentry(const struct file *file)
{
	return file->f_path.dentry;
}

void untorn_helper_inode_times(const struct inode *inode, struct timespec64 *mtime,
			       struct timespec64 *ctime)
{
	*mtime = inode_get_mtime(inode);
	*ctime = inode_get_ctime(inode);
}

/* fsstack_copy_attr_all() without i_flags wholesale and without the size. */
void untorn_helper_copy_attr(struct inode *dest, const struct inode *src)
{
	dest->i_mode = src->i_mode;
	dest->i_uid = src->i_uid;
	dest->i_gid = src->i_gid;
	dest->i_rdev = src->i_rdev;
	inode_set_atime_to_ts(dest, inode_get_atime(src));
	inode_set_mtime_to_ts(dest, inode_get_mtime(src));
	inode_set_ctime_to_ts(dest, inode_get_ctime(src));
	dest->i_blkbits = src->i_blkbits;
	set_nlink(dest, src->i_nlink);
	inode_set_flags(dest, src->i_flags & (S_IMMUTABLE | S_APPEND | S_NOATIME | S_SYNC | S_DIRSYNC),
			S_IMMUTABLE | S_APPEND | S_NOATIME | S_SYNC | S_DIRSYNC);
}

void untorn_helper_inode_lock(struct inode *inode)
{
	inode_lock(inode);
}

void untorn_helper_inode_unlock(struct inode *inode)
{
	inode_unlock(inode);
}

const char *untorn_helper_posix_acl_xattr_name(int type)
{
	return posix_acl_xattr_name(type);
}

struct dentry *untorn_helper_dget(struct dentry *dentry)
{
	return dget(dentry);
}

void untorn_helper_end_creating(struct dentry *child)
{
	end_creating(child);
}

void untorn_helper_end_removing(struct dentry *child)
{
	end_removing(child);
}

bool untorn_helper_d_unhashed(const struct dentry *dentry)
{
	return d_unhashed(dentry);
}

/*
 * A task that cleans the upper's dirty pages by writing to the lower: dirty throttling looks
 * only at the lower's own dirty pages, and allocations do not recurse into filesystem reclaim
 * (as the loop driver and NFS localio do).
 */
#define UNTORN_CLEANING_UPPER_FLAGS (PF_LOCAL_THROTTLE | PF_MEMALLOC_NOFS)

unsigned int untorn_helper_cleaning_upper_begin(void)
{
	unsigned int saved = current->flags & UNTORN_CLEANING_UPPER_FLAGS;

	current->flags |= UNTORN_CLEANING_UPPER_FLAGS;
	return saved;
}

void untorn_helper_cleaning_upper_end(unsigned int saved)
{
	current_restore_flags(saved, UNTORN_CLEANING_UPPER_FLAGS);
}

void untorn_helper_init_sync_kiocb(struct kiocb *kiocb, struct file *file)
{
	init_sync_kiocb(kiocb, file);
}

ssize_t untorn_helper_generic_write_sync(struct kiocb *iocb, ssize_t count)
{
	return generic_write_sync(iocb, count);
}

void untorn_helper_bvec_set_folio(struct bio_vec *bv, struct folio *folio, unsigned int len,
				  size_t offset)
{
	bvec_set_folio(bv, folio, len, offset);
}

void untorn_helper_folio_get(struct folio *folio)
{
	folio_get(folio);
}

void untorn_helper_folio_put(struct folio *folio)
{
	folio_put(folio);
}

loff_t untorn_helper_folio_pos(const struct folio *folio)
{
	return folio_pos(folio);
}

size_t untorn_helper_folio_size(const struct folio *folio)
{
	return folio_size(folio);
}

bool untorn_helper_folio_test_uptodate(const struct folio *folio)
{
	return folio_test_uptodate(folio);
}

void untorn_helper_folio_mark_uptodate(struct folio *folio)
{
	folio_mark_uptodate(folio);
}

void untorn_helper_folio_zero_segment(struct folio *folio, size_t start, size_t end)
{
	folio_zero_segment(folio, start, end);
}

void untorn_helper_mapping_set_error(struct address_space *mapping, int error)
{
	mapping_set_error(mapping, error);
}

void untorn_helper_mapping_set_large_folios(struct address_space *mapping)
{
	mapping_set_large_folios(mapping);
}

struct folio *untorn_helper_filemap_lock_folio(struct address_space *mapping, pgoff_t index)
{
	return filemap_lock_folio(mapping, index);
}

struct folio *untorn_helper_write_begin_get_folio(struct address_space *mapping, loff_t pos,
						  size_t len)
{
	return __filemap_get_folio(mapping, pos >> PAGE_SHIFT, FGP_WRITEBEGIN | fgf_set_order(len),
				   mapping_gfp_mask(mapping));
}

/*
 * The upper inode's ->update_time for the access time, as overlayfs' ovl_update_time(): the
 * lower file's atime is updated under the lower's rules (its mount flags, relatime), where it
 * persists, and the upper inode takes it.
 */
void untorn_helper_touch_atime(struct inode *upper, struct file *lower)
{
	touch_atime(&lower->f_path);
	inode_set_atime_to_ts(upper, inode_get_atime(file_inode(lower)));
}

/*
 * Whether setting an ACL of @type on @inode must clear its set-group-ID bit: the rule of
 * posix_acl_update_mode(), which the lower applies with the mounter's credentials, so untorn
 * checks the caller itself (as overlayfs' ovl_set_acl()).
 */
bool untorn_helper_acl_kills_sgid(struct inode *inode, int type)
{
	return type == ACL_TYPE_ACCESS && (inode->i_mode & S_ISGID) &&
	       !in_group_or_capable(&nop_mnt_idmap, inode, i_gid_into_vfsgid(&nop_mnt_idmap, inode));
}

bool untorn_helper_current_has_mm(void)
{
	return current->mm != NULL;
}

/*
 * The bounce buffer of an untorn write: anonymous memory in the writer's own address space, so
 * that the lower's atomic write can take it as an ITER_UBUF (the only kind
 * generic_atomic_write_valid() accepts). Returns the address or a negative errno.
 */
long untorn_helper_bounce_map(size_t len)
{
	unsigned long addr = vm_mmap(NULL, 0, len, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS, 0);

	return (long)addr;
}

/*
 * Cached bounce buffers (rust/kernel_ext/bounce.rs): a bounce stays mapped and pinned in its
 * address space for that address space's next untorn write; these are the pieces that need C.
 */
struct mm_struct *untorn_helper_current_mm(void)
{
	return current->mm;
}

void untorn_helper_mmgrab(struct mm_struct *mm)
{
	mmgrab(mm);
}

void untorn_helper_mmdrop(struct mm_struct *mm)
{
	mmdrop(mm);
}

/* Whether the address space still exists (a dead one took its mappings with it). */
bool untorn_helper_mm_alive(struct mm_struct *mm)
{
	return atomic_read(&mm->mm_users) > 0;
}

/*
 * Whether addr.. in the current address space still maps exactly these npages pinned pages,
 * writable: its user may have unmapped, remapped or protected the range since the bounce was
 * cached, and then the range is no longer the bounce's.
 */
bool untorn_helper_bounce_still_mapped(unsigned long addr, struct page **pages,
				       unsigned int npages)
{
	struct page *now[UNTORN_BOUNCE_CACHE_PAGES];
	unsigned int done = 0;

	if (!npages)
		return false;
	/* In pieces of at most ARRAY_SIZE(now) pages: a bounce has up to 1 MiB. */
	while (done < npages) {
		unsigned int n = min_t(unsigned int, npages - done, ARRAY_SIZE(now));
		int pinned = pin_user_pages_fast(addr + done * PAGE_SIZE, n, FOLL_WRITE, now);
		bool same;

		if (pinned <= 0)
			return false;
		same = pinned == n && !memcmp(now, pages + done, n * sizeof(*now));
		unpin_user_pages(now, pinned);
		if (!same)
			return false;
		done += n;
	}
	return true;
}

/* Releases of bounce buffers of other address spaces, which only a kthread can enter. */
static struct workqueue_struct *untorn_bounce_wq;

struct untorn_bounce_release {
	struct work_struct work;
	struct mm_struct *mm;
	unsigned long addr;
	size_t len;
	unsigned int npages;
	struct page *pages[];
};

static void untorn_bounce_release_work(struct work_struct *work)
{
	struct untorn_bounce_release *r = container_of(work, struct untorn_bounce_release, work);

	/* A dead address space took the mapping with it; the pins are ours to drop either way. */
	if (mmget_not_zero(r->mm)) {
		kthread_use_mm(r->mm);
		if (untorn_helper_bounce_still_mapped(r->addr, r->pages, r->npages))
			vm_munmap(r->addr, r->len);
		kthread_unuse_mm(r->mm);
		mmput(r->mm);
	}
	unpin_user_pages(r->pages, r->npages);
	mmdrop(r->mm);
	kfree(r);
}

/*
 * Unmaps a bounce buffer of another address space (if it is still there) and drops its pins
 * and the mm reference, in a worker; takes over the pins and the reference. Returns -ENOMEM if
 * it cannot, and then the caller still owns them.
 */
int untorn_helper_bounce_release_foreign(struct mm_struct *mm, unsigned long addr, size_t len,
					 struct page **pages, unsigned int npages)
{
	struct untorn_bounce_release *r;

	r = kmalloc(struct_size(r, pages, npages), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	INIT_WORK(&r->work, untorn_bounce_release_work);
	r->mm = mm;
	r->addr = addr;
	r->len = len;
	r->npages = npages;
	memcpy(r->pages, pages, npages * sizeof(*pages));
	queue_work(untorn_bounce_wq, &r->work);
	return 0;
}

/* Waits until every release queued so far is done. */
void untorn_helper_bounce_flush_releases(void)
{
	flush_workqueue(untorn_bounce_wq);
}

int untorn_helper_bounce_init(void)
{
	untorn_bounce_wq = alloc_workqueue("untorn_bounce", WQ_UNBOUND, 0);
	return untorn_bounce_wq ? 0 : -ENOMEM;
}

/* Module exit: drains the releases still queued. */
void untorn_helper_bounce_exit(void)
{
	destroy_workqueue(untorn_bounce_wq);
}

/* Copies len bytes from the user into the pinned bounce pages from offset; returns the bytes. */
size_t untorn_helper_bounce_fill_at(struct page **pages, size_t offset, size_t len,
				    struct iov_iter *from)
{
	size_t done = 0;

	while (done < len) {
		size_t in_page = offset_in_page(offset + done);
		size_t chunk = min_t(size_t, PAGE_SIZE - in_page, len - done);
		size_t copied = copy_page_from_iter(pages[(offset + done) >> PAGE_SHIFT], in_page,
						    chunk, from);

		done += copied;
		if (copied < chunk)
			break;
	}
	return done;
}

void untorn_helper_bounce_from_folio(struct folio *folio, size_t folio_offset,
				     struct page **pages, size_t bounce_offset, size_t len)
{
	while (len) {
		struct page *page = pages[bounce_offset >> PAGE_SHIFT];
		size_t in_page = offset_in_page(bounce_offset);
		size_t chunk = min_t(size_t, len, PAGE_SIZE - in_page);
		void *to = kmap_local_page(page);

		memcpy_from_folio(to + in_page, folio, folio_offset, chunk);
		kunmap_local(to);
		folio_offset += chunk;
		bounce_offset += chunk;
		len -= chunk;
	}
}

void untorn_helper_bounce_to_folio(struct folio *folio, size_t folio_offset, struct page **pages,
				   size_t bounce_offset, size_t len)
{
	while (len) {
		struct page *page = pages[bounce_offset >> PAGE_SHIFT];
		size_t in_page = offset_in_page(bounce_offset);
		size_t chunk = min_t(size_t, len, PAGE_SIZE - in_page);
		void *from = kmap_local_page(page);

		memcpy_to_folio(folio, folio_offset, from + in_page, chunk);
		kunmap_local(from);
		folio_offset += chunk;
		bounce_offset += chunk;
		len -= chunk;
	}
}

void untorn_helper_folio_wait_writeback(struct folio *folio)
{
	folio_wait_writeback(folio);
}

bool untorn_helper_folio_test_dirty(struct folio *folio)
{
	return folio_test_dirty(folio);
}

void untorn_helper_flush_dcache_folio(struct folio *folio)
{
	flush_dcache_folio(folio);
}

bool untorn_helper_inode_is_nosec(struct inode *inode)
{
	return IS_NOSEC(inode);
}

void untorn_helper_inode_lock_shared(struct inode *inode)
{
	inode_lock_shared(inode);
}

void untorn_helper_inode_unlock_shared(struct inode *inode)
{
	inode_unlock_shared(inode);
}

void untorn_helper_iov_iter_truncate(struct iov_iter *i, size_t count)
{
	iov_iter_truncate(i, count);
}

void untorn_helper_iov_iter_reexpand(struct iov_iter *i, size_t count)
{
	iov_iter_reexpand(i, count);
}

struct untorn_publication {
	spinlock_t lock;
	seqcount_spinlock_t seq;
};

struct untorn_publication *untorn_helper_publication_alloc(void)
{
	struct untorn_publication *slots;
	unsigned int i;

	slots = kvcalloc(UNTORN_PUBLICATION_SLOTS, sizeof(*slots), GFP_KERNEL);
	if (!slots)
		return NULL;
	for (i = 0; i < UNTORN_PUBLICATION_SLOTS; i++) {
		spin_lock_init(&slots[i].lock);
		seqcount_spinlock_init(&slots[i].seq, &slots[i].lock);
	}
	return slots;
}

void untorn_helper_publication_free(struct untorn_publication *slots)
{
	kvfree(slots);
}

unsigned int untorn_helper_publication_read_begin(struct untorn_publication *slots,
						  unsigned int slot)
{
	return read_seqcount_begin(&slots[slot % UNTORN_PUBLICATION_SLOTS].seq);
}

bool untorn_helper_publication_read_retry(struct untorn_publication *slots, unsigned int slot,
					  unsigned int seq)
{
	return read_seqcount_retry(&slots[slot % UNTORN_PUBLICATION_SLOTS].seq, seq);
}

void untorn_helper_publication_write_begin(struct untorn_publication *slots, unsigned int slot)
{
	struct untorn_publication *s = &slots[slot % UNTORN_PUBLICATION_SLOTS];

	spin_lock(&s->lock);
	write_seqcount_begin(&s->seq);
}

void untorn_helper_publication_write_end(struct untorn_publication *slots, unsigned int slot)
{
	struct untorn_publication *s = &slots[slot % UNTORN_PUBLICATION_SLOTS];

	write_seqcount_end(&s->seq);
	spin_unlock(&s->lock);
}

/*
 * The block device operations of the disks of this module: none but the owner, so that an open
 * block device pins the module that serves it (THIS_MODULE is the module this file is compiled
 * into).
 */
static const struct block_device_operations untorn_helper_bdev_fops_table = {
	.owner = THIS_MODULE,
};

const struct block_device_operations *untorn_helper_bdev_fops(void)
{
	return &untorn_helper_bdev_fops_table;
}

/*
 * Copies between a request's pages and buf, at most len bytes (from the pages into buf if
 * to_buf); returns the bytes copied.
 */
static size_t untorn_rq_copy(struct request *rq, void *buf, size_t len, bool to_buf)
{
	struct req_iterator iter;
	struct bio_vec bvec;
	size_t done = 0;

	rq_for_each_segment(bvec, rq, iter) {
		size_t n = min_t(size_t, bvec.bv_len, len - done);

		if (!n)
			break;
		bvec.bv_len = n;
		if (to_buf)
			memcpy_from_bvec(buf + done, &bvec);
		else
			memcpy_to_bvec(&bvec, buf + done);
		done += n;
	}
	return done;
}

size_t untorn_helper_rq_copy_to_buf(struct request *rq, void *buf, size_t len)
{
	return untorn_rq_copy(rq, buf, len, true);
}

size_t untorn_helper_rq_copy_from_buf(struct request *rq, const void *buf, size_t len)
{
	return untorn_rq_copy(rq, (void *)buf, len, false);
}

unsigned int untorn_helper_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void untorn_helper_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

struct bio *untorn_helper_bio_alloc(struct block_device *bdev, unsigned short nr_vecs,
				    blk_opf_t opf)
{
	return bio_alloc(bdev, nr_vecs, opf, GFP_NOIO);
}

loff_t untorn_helper_bdev_nr_bytes(struct block_device *bdev)
{
	return bdev_nr_bytes(bdev);
}

unsigned int untorn_helper_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}

/* The atomic write limits that the block layer enforces for bios to bdev, zero if none. */
void untorn_helper_bdev_atomic_limits(struct block_device *bdev, unsigned int *unit_min,
				      unsigned int *unit_max, unsigned int *max,
				      unsigned int *boundary)
{
	struct request_queue *q = bdev_get_queue(bdev);

	*unit_min = bdev_atomic_write_unit_min_bytes(bdev);
	*unit_max = *unit_min ? bdev_atomic_write_unit_max_bytes(bdev) : 0;
	*max = *unit_min ? queue_atomic_write_max_bytes(q) : 0;
	*boundary = *unit_min ? queue_atomic_write_boundary_bytes(q) : 0;
}

void untorn_helper_inode_set_immutable(struct inode *inode)
{
	inode_lock(inode);
	inode_set_flags(inode, S_IMMUTABLE, S_IMMUTABLE);
	inode_unlock(inode);
}

/*
 * ->fault: filemap_fault(), except that untorn's page cache is never filled from the lower while
 * the fault holds mmap_lock or the VMA lock.
 *
 * Filling a folio reads the lower file, which takes the lower's i_rwsem (XFS' iolock, ext4's
 * i_rwsem) under our invalidate_lock. The lower holds that lock while it copies to or from user
 * memory (a buffered read(2), a direct write's GUP), which may fault and take mmap_lock. A fill
 * under mmap_lock closes the circle mmap_lock -> our invalidate_lock -> lower i_rwsem ->
 * mmap_lock, which lockdep reports, and which deadlocks for real when the lower file itself
 * is read or written into a mapping of its untorn file. filemap_fault() drops the fault lock
 * before its I/O only on a first attempt, and takes our invalidate_lock before dropping it.
 *
 * So: an up-to-date folio found and try-locked is mapped at once, as filemap_fault() would (its
 * size check included). Otherwise, when the fault may be retried, the fault lock is dropped and
 * the folio is read (or waited for, or read ahead of) without it, and the fault is retried
 * (VM_FAULT_RETRY). A folio whose read failed (present, unlocked, not up to date), or a fault
 * that may not drop its lock, goes to filemap_fault(), which reads it under the lock and
 * returns SIGBUS on error: lockdep can then see the circle, on I/O errors only.
 */
vm_fault_t untorn_helper_fault(struct vm_fault *vmf)
{
	struct file *file = vmf->vma->vm_file;
	struct address_space *mapping = file->f_mapping;
	struct inode *inode = mapping->host;
	pgoff_t index = vmf->pgoff;
	struct folio *folio;

	if (index >= DIV_ROUND_UP(i_size_read(inode), PAGE_SIZE))
		return VM_FAULT_SIGBUS;
	folio = filemap_get_folio(mapping, index);
	if (IS_ERR(folio)) {
		folio = NULL;
	} else if (folio_test_uptodate(folio) && !folio_test_readahead(folio) &&
		   folio_trylock(folio)) {
		if (folio->mapping == mapping && folio_test_uptodate(folio)) {
			/* As filemap_fault(): i_size again, under the folio lock. */
			if (index >= DIV_ROUND_UP(i_size_read(inode), PAGE_SIZE)) {
				folio_unlock(folio);
				folio_put(folio);
				return VM_FAULT_SIGBUS;
			}
			vmf->page = folio_file_page(folio, index);
			return VM_FAULT_LOCKED;
		}
		folio_unlock(folio);
	} else if (!folio_test_uptodate(folio) && !folio_test_locked(folio)) {
		/* Its read failed: filemap_fault() reads it once more, or returns SIGBUS. */
		folio_put(folio);
		return filemap_fault(vmf);
	}
	if (!(vmf->flags & FAULT_FLAG_ALLOW_RETRY) || (vmf->flags & FAULT_FLAG_RETRY_NOWAIT)) {
		if (folio)
			folio_put(folio);
		return filemap_fault(vmf);
	}

	/* From here on, nothing of the VMA may be touched: it may go once the lock is dropped. */
	get_file(file);
	release_fault_lock(vmf);
	if (!folio) {
		page_cache_sync_readahead(mapping, &file->f_ra, file, index, 1);
	} else {
		if (folio_test_readahead(folio))
			page_cache_async_readahead(mapping, &file->f_ra, file, folio, 1);
		folio_wait_locked_killable(folio);
		folio_put(folio);
	}
	filemap_invalidate_lock_shared(mapping);
	folio = read_mapping_folio(mapping, index, file);
	filemap_invalidate_unlock_shared(mapping);
	if (!IS_ERR(folio))
		folio_put(folio);
	fput(file);
	return VM_FAULT_RETRY | VM_FAULT_MAJOR;
}

/*
 * ->page_mkwrite: filemap_page_mkwrite() without sleeping on the folio lock. A writethrough
 * write holds its folios locked during the lower I/O, which may take mmap_lock; a fault must not
 * sleep on such a folio holding mmap_lock (or the VMA lock). So try the lock; if it is held,
 * back off for a jiffy and let the fault be retried from scratch (VM_FAULT_NOPAGE).
 */
vm_fault_t untorn_helper_page_mkwrite(struct vm_fault *vmf)
{
	struct file *file = vmf->vma->vm_file;
	struct address_space *mapping = file->f_mapping;
	struct folio *folio = page_folio(vmf->page);
	vm_fault_t ret = VM_FAULT_LOCKED;

	sb_start_pagefault(mapping->host->i_sb);
	file_update_time(file);
	if (!folio_trylock(folio)) {
		sb_end_pagefault(mapping->host->i_sb);
		schedule_timeout_uninterruptible(1);
		return VM_FAULT_NOPAGE;
	}
	if (folio->mapping != mapping) {
		folio_unlock(folio);
		ret = VM_FAULT_NOPAGE;
		goto out;
	}
	folio_mark_dirty(folio);
	folio_wait_stable(folio);
out:
	sb_end_pagefault(mapping->host->i_sb);
	return ret;
}

void untorn_helper_file_accessed(struct file *file)
{
	file_accessed(file);
}
