/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FUSE low-level operations. Every op sends exactly one reply on every
 * path. The model never changes while mounted, so nodes are permanent:
 * lookup counts need no bookkeeping and forget is a no-op.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

#include "describe.h"
#include "stfs.h"

#define XATTR_PREFIX "user.safetensors."

static struct stfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Generate a /.stfs document once; 0 or -errno. */
static int special_get(struct stfs *fs, unsigned id, const char **text, size_t *len)
{
	int ret = 0;

	pthread_mutex_lock(&fs->lock);
	if (!fs->special[id]) {
		if (id == STF_SPECIAL_HEADER_JSON)
			ret = stf_describe_header(fs->model, fs->tree, &fs->special[id],
						  &fs->special_len[id]);
		else
			ret = stf_describe_metadata(fs->model, &fs->special[id],
						    &fs->special_len[id]);
	}
	*text = fs->special[id];
	*len = fs->special_len[id];
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

static int fill_attr(struct stfs *fs, fuse_ino_t ino, struct stat *st)
{
	const struct stf_node *n = stf_tree_node(fs->tree, ino);
	const struct stf_tensor *t;

	if (!n)
		return -ENOENT;
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 1 << 20;
	st->st_mtim = st->st_ctim = st->st_atim = fs->dir_mtime;
	switch (n->kind) {
	case STF_NODE_DIR:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		break;
	case STF_NODE_TENSOR:
		t = &fs->model->tensors[n->index];
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)t->size;
		st->st_mtim = st->st_ctim = st->st_atim = fs->model->shards[t->shard].mtime;
		break;
	case STF_NODE_SPECIAL: {
		const char *text;
		size_t len;
		int ret = special_get(fs, n->index, &text, &len);

		if (ret)
			return ret;
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)len;
		break;
	}
	}
	st->st_blocks = (st->st_size + 511) / 512;
	return 0;
}

static void fill_entry(struct stfs *fs, struct fuse_entry_param *e)
{
	e->attr_timeout = fs->timeout;
	e->entry_timeout = fs->timeout;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct stfs *fs = userdata;

	/* 1 MiB requests; libfuse derives max_pages from max_write. */
	conn->max_write = 1u << 20;
	/*
	 * The kernel sets the bdi readahead to min(its current value, this),
	 * after main() has raised the current value through sysfs (as root).
	 */
	if (fs->readahead_kb)
		conn->max_readahead = fs->readahead_kb * 1024u;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	conn->time_gran = 1;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct stfs *fs = fs_of(req);
	struct fuse_entry_param e = {0};
	uint64_t ino;
	int ret;

	ret = stf_tree_lookup(fs->tree, parent, name, strlen(name), &ino);
	fill_entry(fs, &e);
	if (ret == -ENOENT) {
		/* Negative entry, cached by the kernel for the same timeout. */
		e.ino = 0;
		fuse_reply_entry(req, &e);
		return;
	}
	if (!ret)
		ret = fill_attr(fs, ino, &e.attr);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	e.ino = ino;
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stfs *fs = fs_of(req);
	struct stat st;
	int ret = fill_attr(fs, ino, &st);

	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stfs *fs = fs_of(req);
	const struct stf_node *n = stf_tree_node(fs->tree, ino);

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->kind == STF_NODE_DIR) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* Immutable content: keep the page cache across opens. */
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct stfs *fs = fs_of(req);
	const struct stf_node *n = stf_tree_node(fs->tree, ino);
	const char *base;
	size_t len;

	if (!n || n->kind == STF_NODE_DIR) {
		fuse_reply_err(req, n ? EISDIR : ENOENT);
		return;
	}
	if (n->kind == STF_NODE_TENSOR) {
		const struct stf_tensor *t = &fs->model->tensors[n->index];

		base = (const char *)fs->model->shards[t->shard].map + t->begin;
		len = t->size;
	} else {
		int ret = special_get(fs, n->index, &base, &len);

		if (ret) {
			fuse_reply_err(req, -ret);
			return;
		}
	}
	if (off < 0 || (uint64_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > len - (uint64_t)off)
		size = len - (uint64_t)off;
	/* Straight from the mapping: the kernel copies once, the daemon never. */
	fuse_reply_buf(req, base + off, size);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	const struct stf_node *n = stf_tree_node(fs_of(req)->tree, ino);

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->kind != STF_NODE_DIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* Offsets: 1 is ".", 2 is "..", 3 + i the i-th child. */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct stfs *fs = fs_of(req);
	const struct stf_node *d = stf_tree_node(fs->tree, ino);
	size_t used = 0;
	char *buf;

	if (!d || d->kind != STF_NODE_DIR) {
		fuse_reply_err(req, d ? ENOTDIR : ENOENT);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (off_t i = off; i < 2 + (off_t)d->nchildren; i++) {
		fuse_ino_t cino = i == 0 ? ino : i == 1 ? d->parent : d->first_child + (fuse_ino_t)(i - 2);
		const char *name = i == 0 ? "." : i == 1 ? ".." : stf_tree_node(fs->tree, cino)->name;
		struct fuse_entry_param e = {0};
		size_t need;

		if (fill_attr(fs, cino, &e.attr))
			continue;
		if (plus) {
			fill_entry(fs, &e);
			e.ino = cino;
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, i + 1);
		} else {
			need = fuse_add_direntry(req, buf + used, size - used, name, &e.attr, i + 1);
		}
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, true);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct stfs *fs = fs_of(req);
	struct statvfs sv = {0};

	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = (fs->model->total_bytes + 4095) / 4096;
	sv.f_files = stf_tree_count(fs->tree);
	sv.f_namemax = 255;
	sv.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

/* The value of xattr @name of tensor @t into @buf (cap 512); its length or -ENODATA. */
static int xattr_value(struct stfs *fs, const struct stf_tensor *t, const char *name, char *buf,
		       size_t cap, const char **val)
{
	int n = 0;

	if (strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)))
		return -ENODATA;
	name += strlen(XATTR_PREFIX);
	*val = buf;
	if (!strcmp(name, "name")) {
		*val = t->name;
		return (int)t->name_len;
	} else if (!strcmp(name, "dtype")) {
		n = snprintf(buf, cap, "%s", stf_dtype_info(t->dtype)->name);
	} else if (!strcmp(name, "shape")) {
		n = snprintf(buf, cap, "[");
		for (uint32_t d = 0; d < t->rank && (size_t)n < cap; d++)
			n += snprintf(buf + n, cap - (size_t)n, d ? ",%" PRIu64 : "%" PRIu64,
				      t->shape[d]);
		if ((size_t)n + 2 > cap)
			return -E2BIG;
		n += snprintf(buf + n, cap - (size_t)n, "]");
	} else if (!strcmp(name, "shard")) {
		*val = fs->model->shards[t->shard].name;
		return (int)strlen(*val);
	} else if (!strcmp(name, "offset")) {
		n = snprintf(buf, cap, "%" PRIu64, t->begin);
	} else {
		return -ENODATA;
	}
	return n;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct stfs *fs = fs_of(req);
	const struct stf_node *n = stf_tree_node(fs->tree, ino);
	const char *val;
	char *buf;
	size_t cap;
	int len;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->kind != STF_NODE_TENSOR) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	/* A shape is at most rank * 21 bytes; names are referenced, not copied. */
	cap = 64 + (size_t)fs->model->tensors[n->index].rank * 22;
	buf = malloc(cap);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	len = xattr_value(fs, &fs->model->tensors[n->index], name, buf, cap, &val);
	if (len < 0)
		fuse_reply_err(req, -len);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)len);
	else if (size < (size_t)len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, val, (size_t)len);
	free(buf);
}

static const char xattr_list[] = XATTR_PREFIX "name\0" XATTR_PREFIX "dtype\0" XATTR_PREFIX
	"shape\0" XATTR_PREFIX "shard\0" XATTR_PREFIX "offset";

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	const struct stf_node *n = stf_tree_node(fs_of(req)->tree, ino);
	size_t len = n && n->kind == STF_NODE_TENSOR ? sizeof(xattr_list) : 0;

	if (!n)
		fuse_reply_err(req, ENOENT);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, xattr_list, len);
}

/* Everything that would change the tree: EROFS. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	fuse_reply_err(req, EROFS);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops stfs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_unlink,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.create = op_create,
	.fallocate = op_fallocate,
};
