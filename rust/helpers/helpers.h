/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C wrappers for `static inline` kernel functions that untorn's Rust code calls.
 *
 * Rust cannot call a `static inline` function, and the kernel's own rust/helpers/ cover only
 * what in-tree Rust uses. Each wrapper here is one call, named untorn_helper_<function>; our
 * bindgen run (tools/testing/gen-bindings) declares them to Rust in `kernel_ext::bindings`.
 */
#ifndef UNTORN_RUST_HELPERS_H
#define UNTORN_RUST_HELPERS_H

#include <linux/uio.h>

void untorn_helper_iov_iter_ubuf(struct iov_iter *i, unsigned int direction, void __user *buf,
				 size_t count);

#endif /* UNTORN_RUST_HELPERS_H */
