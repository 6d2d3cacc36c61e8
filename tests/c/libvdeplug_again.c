/* again://N: a nested C plugin that builds its inner VNL itself, with no
 * braces: again://N-1, and null:// at 0 (tests/test_security.py: nesting
 * the grammar cannot see is limited at run time). Frames pass through. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <libvdeplug_mod.h>

struct again_conn {
	void *handle;
	struct vdeplug_module *module;
	VDECONN *inner;
};

static VDECONN *again_open(char *url, char *descr, int version, struct vde_open_args *args) {
	(void)version;
	char inner[64];
	long n = strtol(url, NULL, 10);
	if (n > 0) snprintf(inner, sizeof inner, "again://%ld", n - 1);
	else snprintf(inner, sizeof inner, "null://");
	struct again_conn *c = calloc(1, sizeof *c);
	if (c == NULL) return NULL;
	c->inner = vde_open(inner, descr, args);
	if (c->inner == NULL) { int e = errno; free(c); errno = e; return NULL; }
	return (VDECONN *)c;
}

static ssize_t again_recv(VDECONN *conn, void *buf, size_t len, int flags) { return vde_recv(((struct again_conn *)conn)->inner, buf, len, flags); }
static ssize_t again_send(VDECONN *conn, const void *buf, size_t len, int flags) { return vde_send(((struct again_conn *)conn)->inner, buf, len, flags); }
static int again_datafd(VDECONN *conn) { return vde_datafd(((struct again_conn *)conn)->inner); }
static int again_ctlfd(VDECONN *conn) { return vde_ctlfd(((struct again_conn *)conn)->inner); }

static int again_close(VDECONN *conn) {
	struct again_conn *c = (struct again_conn *)conn;
	vde_close(c->inner);
	free(c);
	return 0;
}

struct vdeplug_module vdeplug_ops = {
	.vde_open_real = again_open,
	.vde_recv = again_recv,
	.vde_send = again_send,
	.vde_datafd = again_datafd,
	.vde_ctlfd = again_ctlfd,
	.vde_close = again_close,
};
