/* mark://N[/size=S][/grp=G]{VNL}: a small nested C plugin of our own,
 * built by the tests against our libvdeplug_mod.h and libvdeplug_mod.so.2
 * only. It exercises the plugin ABI and every helper:
 *   - vde_parsenestparms + vde_parseparms: N, size (strtoullm), grp
 *     (vde_grnam2gid); the inner VNL is opened with vde_open (our library);
 *   - the hash table: sources of received frames are learned (payload: N);
 *   - sending stamps byte 14 = N, byte 15 = 0xAA if the destination was
 *     learned (vde_find_in_hash) else 0x55, byte 16 = size >> 10,
 *     byte 17 = gid & 0xff. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libvdeplug_mod.h>

struct mark_conn {
	void *handle;
	struct vdeplug_module *module;
	VDECONN *inner;
	struct vde_hashtable *table;
	unsigned char mark, size_k, gid;
};

static VDECONN *mark_open(char *url, char *descr, int version, struct vde_open_args *args) {
	(void)version;
	char *sizestr = "1K", *grpstr = NULL;
	struct vdeparms parms[] = {{"size", &sizestr}, {"grp", &grpstr}, {NULL, NULL}};
	char *nested = vde_parsenestparms(url);
	if (nested == NULL || vde_parseparms(url, parms) != 0) { errno = EINVAL; return NULL; }
	struct mark_conn *c = calloc(1, sizeof *c);
	if (c == NULL) return NULL;
	c->mark = (unsigned char)strtol(url, NULL, 0);
	c->size_k = (unsigned char)(strtoullm(sizestr) >> 10);
	c->gid = grpstr ? (unsigned char)vde_grnam2gid(grpstr) : 0;
	c->table = vde_hash_init(int, 64, 0);
	c->inner = vde_open(nested, descr, args);
	if (c->inner == NULL) { int e = errno; vde_hash_fini(c->table); free(c); errno = e; return NULL; }
	return (VDECONN *)c;
}

static ssize_t mark_recv(VDECONN *conn, void *buf, size_t len, int flags) {
	struct mark_conn *c = (struct mark_conn *)conn;
	ssize_t n = vde_recv(c->inner, buf, len, flags);
	if (n >= 14) {
		int payload = c->mark;
		vde_find_in_hash_update(c->table, (unsigned char *)buf + 6, 0, &payload, time(NULL));
	}
	return n;
}

static ssize_t mark_send(VDECONN *conn, const void *buf, size_t len, int flags) {
	struct mark_conn *c = (struct mark_conn *)conn;
	unsigned char f[VDE_ETHBUFSIZE];
	if (len < 18 || len > sizeof f) return len;
	memcpy(f, buf, len);
	int *known = vde_find_in_hash(c->table, f, 0, time(NULL) - 60);
	f[14] = c->mark;
	f[15] = (known && *known == c->mark) ? 0xAA : 0x55;
	f[16] = c->size_k;
	f[17] = c->gid;
	return vde_send(c->inner, f, len, flags);
}

static int mark_datafd(VDECONN *conn) { return vde_datafd(((struct mark_conn *)conn)->inner); }
static int mark_ctlfd(VDECONN *conn) { return vde_ctlfd(((struct mark_conn *)conn)->inner); }

static int mark_close(VDECONN *conn) {
	struct mark_conn *c = (struct mark_conn *)conn;
	int payload = c->mark;
	vde_hash_delete(c->table, &payload);
	vde_hash_fini(c->table);
	vde_close(c->inner);
	free(c);
	return 0;
}

struct vdeplug_module vdeplug_ops = {
	.vde_open_real = mark_open,
	.vde_recv = mark_recv,
	.vde_send = mark_send,
	.vde_datafd = mark_datafd,
	.vde_ctlfd = mark_ctlfd,
	.vde_close = mark_close,
};
