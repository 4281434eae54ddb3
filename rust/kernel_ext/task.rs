// SPDX-License-Identifier: GPL-2.0

//! Scopes that change how the current task is treated by the VM.

use super::bindings as ext;

/// Runs `f` as a task that cleans the upper filesystem's dirty pages by writing to the lower.
///
/// Dirty throttling then looks only at the lower's own dirty pages (`PF_LOCAL_THROTTLE`):
/// otherwise a buffered lower write could wait for the global dirty count to fall, when most
/// dirty pages are the upper's and only this task can clean them. And its allocations do not
/// recurse into filesystem reclaim (`PF_MEMALLOC_NOFS`). The loop driver and NFS localio do the
/// same.
pub fn cleaning_upper_pages<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: Changes only the current task's flags; restored below on the same task.
    let saved = unsafe { ext::untorn_helper_cleaning_upper_begin() };
    let result = f();
    // SAFETY: `saved` came from the matching begin on this task, in this scope.
    unsafe { ext::untorn_helper_cleaning_upper_end(saved) };
    result
}
