// SPDX-License-Identifier: GPL-2.0

//! Directory inode operations: every name operation is done by the lower filesystem, with the
//! mounter's credentials (the creator's for new objects), and mirrored in our dcache.

use kernel::{bindings, prelude::*, sync::aref::ARef};

use crate::{
    kernel_ext::{
        cred::CreatorCred,
        lower,
        ops::{copy_attributes, get_inode, init_inode, UpperFile},
        vfs::{Dentry, Inode, LowerDentry, LowerFile},
    },
    Untorn,
};

/// The upper inode of a positive lower dentry, created if new.
fn upper_inode(dir: &Inode<Untorn>, lower: &LowerDentry) -> Result<ARef<Inode<Untorn>>> {
    let lower_inode = lower.inode().ok_or(ENOENT)?;
    get_inode(dir.super_block(), lower_inode, |inode| {
        init_inode(inode);
        Ok(())
    })
}

pub(crate) fn lookup(
    dir: &Inode<Untorn>,
    dentry: &Dentry<Untorn>,
) -> Result<Option<ARef<Inode<Untorn>>>> {
    let lower_parent = dentry.parent().lower()?;
    let lower = dir
        .super_block()
        .as_mounter(|| lower::lookup(lower_parent, dentry.name_qstr()))?;
    if lower.is_weird() {
        // Automount points, casefolded or encrypted lower directories: their names do not
        // behave as ours would.
        return Err(EREMOTE);
    }
    let inode = match lower.inode() {
        Some(_) => Some(upper_inode(dir, &lower)?),
        None => None,
    };
    dentry.set_lower(lower)?;
    Ok(inode)
}

/// After a lower object was created for `dentry`: instantiates it with the upper inode, and
/// refreshes the directory's attributes (times, link count).
fn created(dir: &Inode<Untorn>, dentry: &Dentry<Untorn>, lower: &LowerDentry) -> Result {
    let inode = upper_inode(dir, lower)?;
    copy_attributes(dir);
    dentry.instantiate(inode);
    Ok(())
}

/// Runs a creating lower operation with write access to the lower and the creator's
/// credentials.
fn as_creator<R>(dir: &Inode<Untorn>, f: impl FnOnce() -> Result<R>) -> Result<R> {
    let creator = CreatorCred::new(&dir.super_block().info().creds)?;
    dir.super_block().as_mounter_writing(|| {
        let _guard = creator.override_current();
        f()
    })
}

pub(crate) fn create(dir: &Inode<Untorn>, dentry: &Dentry<Untorn>, mode: u16) -> Result {
    let (parent, child) = (dentry.parent().lower()?, dentry.lower()?);
    as_creator(dir, || lower::create(parent, child, mode))?;
    created(dir, dentry, child)
}

pub(crate) fn mkdir(dir: &Inode<Untorn>, dentry: &Dentry<Untorn>, mode: u16) -> Result {
    let (parent, child) = (dentry.parent().lower()?, dentry.lower()?);
    let made = as_creator(dir, || lower::mkdir(parent, child, mode))?;
    if made.is_unhashed() {
        // The lower filesystem created the directory but did not keep the dentry (as some
        // network filesystems): look it up again on the next access.
        dentry.drop_from_cache();
        return Ok(());
    }
    if !ptr_eq(&made, child) {
        // The lower returned another dentry for the new directory; ours keeps its lower, so
        // let the next lookup find the directory.
        dentry.drop_from_cache();
        return Ok(());
    }
    created(dir, dentry, &made)
}

fn ptr_eq(a: &LowerDentry, b: &LowerDentry) -> bool {
    core::ptr::eq(a, b)
}

pub(crate) fn mknod(dir: &Inode<Untorn>, dentry: &Dentry<Untorn>, mode: u16, dev: u32) -> Result {
    let (parent, child) = (dentry.parent().lower()?, dentry.lower()?);
    as_creator(dir, || lower::mknod(parent, child, mode, dev))?;
    created(dir, dentry, child)
}

pub(crate) fn symlink(dir: &Inode<Untorn>, dentry: &Dentry<Untorn>, target: &CStr) -> Result {
    let (parent, child) = (dentry.parent().lower()?, dentry.lower()?);
    as_creator(dir, || lower::symlink(parent, child, target))?;
    created(dir, dentry, child)
}

/// `O_TMPFILE`: the lower creates the unnamed file; our new dentry gets it as its lower.
pub(crate) fn tmpfile(dir: &Inode<Untorn>, file: &UpperFile, mode: u16) -> Result {
    let dentry = file.dentry::<Untorn>();
    let parent = dentry.parent().lower_path()?;
    let creator = CreatorCred::new(&dir.super_block().info().creds)?;
    let lower_file = dir.super_block().as_mounter_writing(|| {
        let _guard = creator.override_current();
        LowerFile::open_tmpfile(
            &parent,
            mode,
            bindings::O_RDWR | bindings::O_LARGEFILE,
            &creator,
        )
    })?;
    let lower = lower_file.dentry();
    let inode = upper_inode(dir, lower)?;
    dentry.set_lower(ARef::from(lower))?;
    file.finish_tmpfile(inode)
}

pub(crate) fn link(old: &Dentry<Untorn>, dir: &Inode<Untorn>, new: &Dentry<Untorn>) -> Result {
    let (lower_old, parent, child) = (old.lower()?, new.parent().lower()?, new.lower()?);
    dir.super_block()
        .as_mounter_writing(|| lower::link(lower_old, parent, child))?;
    // Hard links share one upper inode: `created` finds the cached one, with a new link count.
    if let Some(inode) = old.inode() {
        copy_attributes(inode);
    }
    created(dir, new, child)
}

pub(crate) fn unlink(dir: &Inode<Untorn>, dentry: &Dentry<Untorn>) -> Result {
    let (parent, child) = (dentry.parent().lower()?, dentry.lower()?);
    dir.super_block()
        .as_mounter_writing(|| lower::unlink(parent, child))?;
    copy_attributes(dir);
    if let Some(inode) = dentry.inode() {
        copy_attributes(inode);
    }
    // The lower dentry is now negative, or unhashed if in use: look the name up anew.
    dentry.drop_from_cache();
    Ok(())
}

pub(crate) fn rmdir(dir: &Inode<Untorn>, dentry: &Dentry<Untorn>) -> Result {
    let (parent, child) = (dentry.parent().lower()?, dentry.lower()?);
    dir.super_block()
        .as_mounter_writing(|| lower::rmdir(parent, child))?;
    copy_attributes(dir);
    if let Some(inode) = dentry.inode() {
        inode.clear_nlink();
    }
    dentry.drop_from_cache();
    Ok(())
}

pub(crate) fn rename(
    old_dir: &Inode<Untorn>,
    old: &Dentry<Untorn>,
    new_dir: &Inode<Untorn>,
    new: &Dentry<Untorn>,
    flags: u32,
) -> Result {
    let supported = bindings::RENAME_NOREPLACE | bindings::RENAME_EXCHANGE;
    if flags & !supported != 0 {
        // RENAME_WHITEOUT is for overlayfs' own use.
        return Err(EINVAL);
    }
    let (old_parent, lower_old) = (old.parent().lower()?, old.lower()?);
    let (new_parent, lower_new) = (new.parent().lower()?, new.lower()?);
    old_dir.super_block().as_mounter_writing(|| {
        lower::rename(old_parent, lower_old, new_parent, lower_new, flags)
    })?;
    copy_attributes(old_dir);
    copy_attributes(new_dir);
    if let Some(target) = new.inode() {
        copy_attributes(target);
    }
    // The lower dentries moved with the rename (d_move), so each of our dentries keeps its lower
    // counterpart: the VFS moves ours the same way.
    Ok(())
}
