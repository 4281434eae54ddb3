// SPDX-License-Identifier: GPL-2.0
/*
 * untorn's mount API: the file_system_type, fs_context and parameter parsing.
 *
 * This is C because struct fs_context and struct fs_parameter are opaque to Rust in 7.3 and
 * fsparam_enum() is a C initialiser macro. Everything after the parsing (the super block, the
 * lower mount, every operation) is Rust: this file hands over to untorn_fill_super(),
 * untorn_reconfigure() and untorn_kill_sb(), declared in rust/helpers/helpers.h.
 */

#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/fs_parser.h>
#include <linux/module.h>
#include <linux/namei.h>
#include <linux/slab.h>

#include "../../rust/helpers/helpers.h"

enum untorn_param {
	Opt_writethrough,
};

/* The values are lib/untorn_logic/src/mount_options.rs's WritethroughPolicy. */
static const struct constant_table untorn_writethrough_values[] = {
	{ "marked", UNTORN_WRITETHROUGH_MARKED },
	{ "all", UNTORN_WRITETHROUGH_ALL },
	{ "none", UNTORN_WRITETHROUGH_NONE },
	{}
};

static const struct fs_parameter_spec untorn_fs_parameters[] = {
	fsparam_enum("writethrough", Opt_writethrough, untorn_writethrough_values),
	{}
};

struct untorn_fs_context {
	int writethrough;
	bool writethrough_given;
};

static int untorn_parse_param(struct fs_context *fc, struct fs_parameter *param)
{
	struct untorn_fs_context *ctx = fc->fs_private;
	struct fs_parse_result result;
	int opt;

	opt = fs_parse(fc, untorn_fs_parameters, param, &result);
	if (opt < 0)
		return opt;
	switch (opt) {
	case Opt_writethrough:
		ctx->writethrough = result.uint_32;
		ctx->writethrough_given = true;
		return 0;
	}
	return -EINVAL;
}

/*
 * The source is a directory (stacked mode: untorn over a lower filesystem) or a block device
 * (raw mode: untorn's one file is the device); anything else gets ENOTDIR.
 */
static int untorn_fill_super_fc(struct super_block *sb, struct fs_context *fc)
{
	struct untorn_fs_context *ctx = fc->fs_private;
	struct path source;
	bool is_dir, is_blk;
	int err;

	if (!fc->source)
		return invalf(fc, "untorn: no source given");
	err = kern_path(fc->source, LOOKUP_FOLLOW, &source);
	if (err) {
		errorf(fc, "untorn: source %s: error %d", fc->source, err);
		return err;
	}
	is_dir = d_is_dir(source.dentry);
	is_blk = d_is_special(source.dentry) && S_ISBLK(d_backing_inode(source.dentry)->i_mode);
	if (is_dir) {
		err = untorn_fill_super(sb, &source, ctx->writethrough, fc->sb_flags & SB_SILENT);
		path_put(&source);
		return err;
	}
	path_put(&source);
	if (!is_blk) {
		errorf(fc, "untorn: source %s is neither a directory nor a block device",
		       fc->source);
		return -ENOTDIR;
	}
	err = untorn_fill_super_raw(sb, fc->source, ctx->writethrough, fc->sb_flags & SB_SILENT);
	if (err)
		errorf(fc, "untorn: block device %s: error %d", fc->source, err);
	return err;
}

static int untorn_get_tree(struct fs_context *fc)
{
	return get_tree_nodev(fc, untorn_fill_super_fc);
}

static int untorn_reconfigure_fc(struct fs_context *fc)
{
	struct untorn_fs_context *ctx = fc->fs_private;

	return untorn_reconfigure(fc->root->d_sb, ctx->writethrough_given ? ctx->writethrough : -1,
				  fc->sb_flags, fc->sb_flags_mask);
}

static void untorn_free_fc(struct fs_context *fc)
{
	kfree(fc->fs_private);
}

static const struct fs_context_operations untorn_context_ops = {
	.parse_param = untorn_parse_param,
	.get_tree = untorn_get_tree,
	.reconfigure = untorn_reconfigure_fc,
	.free = untorn_free_fc,
};

static int untorn_init_fs_context(struct fs_context *fc)
{
	struct untorn_fs_context *ctx;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	ctx->writethrough = UNTORN_WRITETHROUGH_MARKED;
	/* A remount keeps the current policy unless the option is given again. */
	if (fc->purpose == FS_CONTEXT_FOR_RECONFIGURE)
		ctx->writethrough_given = false;
	fc->fs_private = ctx;
	fc->ops = &untorn_context_ops;
	return 0;
}

/*
 * No FS_USERNS_MOUNT: mounting needs CAP_SYS_ADMIN in the initial user namespace, so an
 * unprivileged mount gets EPERM from the VFS. The owner reference that every super block holds
 * on its file_system_type is what makes rmmod fail while mounted.
 */
static struct file_system_type untorn_fs_type = {
	.owner = THIS_MODULE,
	.name = "untorn",
	.init_fs_context = untorn_init_fs_context,
	.parameters = untorn_fs_parameters,
	.kill_sb = untorn_kill_sb,
};

int untorn_helper_register_filesystem(void)
{
	return register_filesystem(&untorn_fs_type);
}

void untorn_helper_unregister_filesystem(void)
{
	unregister_filesystem(&untorn_fs_type);
}
