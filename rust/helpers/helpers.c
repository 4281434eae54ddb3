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
