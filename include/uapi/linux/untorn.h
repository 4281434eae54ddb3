/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * untorn: the per-file writethrough mode ioctls.
 *
 * A file on an untorn mount is written through (each write sent at once to the device, untorn
 * where it can be) when its persistent mode is UNTORN_MODE_WRITETHROUGH and the mount option is
 * writethrough=marked (the default), or whenever the mount option is writethrough=all. The mode
 * is stored on the lower file and survives remount and inode eviction. Setting it is allowed to
 * the file's owner or CAP_FOWNER, as for chattr. See Documentation/filesystems/untorn.rst.
 *
 * Rust users: the same numbers are in lib/untorn_logic/src/uapi.rs; a KUnit test checks them
 * against this header.
 */
#ifndef _UAPI_LINUX_UNTORN_H
#define _UAPI_LINUX_UNTORN_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define UNTORN_MODE_OFF		0
#define UNTORN_MODE_WRITETHROUGH	1

struct untorn_mode {
	__u32 mode;	 /* UNTORN_MODE_OFF or UNTORN_MODE_WRITETHROUGH */
	__u32 effective; /* GET only: the mode after the mount option; ignored by SET */
	__u32 flags;	 /* must be 0 */
	__u32 reserved;	 /* must be 0 */
};

#define UNTORN_IOC_GET_MODE	_IOR(0xBC, 0x00, struct untorn_mode)
#define UNTORN_IOC_SET_MODE	_IOW(0xBC, 0x01, struct untorn_mode)

#endif /* _UAPI_LINUX_UNTORN_H */
