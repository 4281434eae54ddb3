// SPDX-License-Identifier: GPL-2.0
/* The C helpers of rust/helpers/, compiled into this module as private symbols. */
#include "../../../rust/helpers/helpers.c"
