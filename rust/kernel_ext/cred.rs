// SPDX-License-Identifier: GPL-2.0

//! Credentials for calls into a lower filesystem: the mounter's, installed for a scope.

use core::marker::PhantomData;

use kernel::{
    bindings,
    cred::Credential,
    error::{code::ENOMEM, Result},
    sync::aref::ARef,
};

use super::bindings as ext;

/// The mounter's credentials, copied when the filesystem is mounted.
///
/// # Invariants
///
/// `CAP_SYS_RESOURCE` is not in the effective set: a stacked filesystem must never let the lower
/// use reserved space or ignore quotas on a user's behalf (as `ovl_fill_super_creds()`).
pub struct MounterCred(ARef<Credential>);

impl MounterCred {
    /// Copies the current task's credentials, without `CAP_SYS_RESOURCE`.
    pub fn from_current() -> Result<Self> {
        // SAFETY: `prepare_creds` has no preconditions; it returns a new credential with a
        // reference owned by us, or null.
        let cred = unsafe { bindings::prepare_creds() };
        if cred.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `cred` is a new, unpublished credential, so we may still change it.
        unsafe { ext::untorn_helper_cap_lower_sys_resource(cred) };
        // SAFETY: `cred` is valid and we own the reference that `prepare_creds` took.
        let cred = unsafe { ARef::from_raw(core::ptr::NonNull::new_unchecked(cred.cast())) };
        Ok(Self(cred))
    }

    /// Installs these credentials for the current task until the guard is dropped.
    pub fn override_current(&self) -> CredGuard<'_> {
        CredGuard::install(&self.0)
    }

    /// The credential, e.g. for opening files.
    pub fn as_ptr(&self) -> *const bindings::cred {
        self.0.as_ptr()
    }
}

/// Whether the current task has `CAP_SYS_ADMIN` in the initial user namespace, without an
/// audit record: the right to see `trusted.*` extended attribute names (as overlayfs'
/// `ovl_can_list()`).
pub fn current_may_list_trusted() -> bool {
    // SAFETY: `init_user_ns` is a static of the kernel; we only take its address.
    unsafe {
        bindings::ns_capable_noaudit(
            core::ptr::addr_of_mut!(bindings::init_user_ns),
            bindings::CAP_SYS_ADMIN as i32,
        )
    }
}

/// Overridden credentials of the current task; dropping it restores the previous ones.
///
/// # Invariants
///
/// `old` is the credential the task had before; the guard is dropped by the task that created
/// it (it is not `Send`), and guards nest last-in first-out because they are scoped values.
pub struct CredGuard<'a> {
    old: *const bindings::cred,
    _cred: PhantomData<&'a Credential>,
    _not_send: PhantomData<*mut ()>,
}

impl<'a> CredGuard<'a> {
    /// Installs `cred` for the current task until the guard is dropped.
    fn install(cred: &'a Credential) -> Self {
        // SAFETY: `cred` is a valid credential that outlives the guard (its lifetime), which
        // puts the old one back before it is dropped.
        let old = unsafe { ext::untorn_helper_override_creds(cred.as_ptr()) };
        CredGuard {
            old,
            _cred: PhantomData,
            _not_send: PhantomData,
        }
    }
}

impl Drop for CredGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants this is the task that overrode its credentials and
        // `old` is what it had before.
        unsafe { ext::untorn_helper_revert_creds(self.old) };
    }
}

/// The credentials for creating a lower object on behalf of the current task: the mounter's,
/// with the caller's `fsuid`/`fsgid`, so the new object is owned by the caller (as overlayfs'
/// `ovl_override_creator_creds()`).
pub struct CreatorCred(ARef<Credential>);

impl CreatorCred {
    /// Builds the creator credentials for the current task from the mounter's.
    pub fn new(mounter: &MounterCred) -> Result<Self> {
        // SAFETY: `current_cred()` is the task's live credential; we copy two plain fields.
        let (fsuid, fsgid) = unsafe {
            let current = ext::untorn_helper_current_cred();
            ((*current).fsuid, (*current).fsgid)
        };
        let new = {
            let _mounter = mounter.override_current();
            // SAFETY: `prepare_creds` copies the (now overridden) credentials of the task.
            unsafe { bindings::prepare_creds() }
        };
        if new.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `new` is a new, unpublished credential that we may change.
        unsafe {
            (*new).fsuid = fsuid;
            (*new).fsgid = fsgid;
        }
        // SAFETY: We own the reference `prepare_creds` returned.
        Ok(Self(unsafe {
            ARef::from_raw(core::ptr::NonNull::new_unchecked(new.cast()))
        }))
    }

    /// The credential, e.g. for opening files.
    pub fn as_ptr(&self) -> *const bindings::cred {
        self.0.as_ptr()
    }

    /// Installs these credentials until the guard is dropped.
    pub fn override_current(&self) -> CredGuard<'_> {
        CredGuard::install(&self.0)
    }
}
