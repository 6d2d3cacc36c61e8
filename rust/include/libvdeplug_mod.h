/* libvdeplug_mod.h: writing a vdeplug plugin, libvdeplug_<scheme>.so
 * (vdeplug4's plugin ABI), with the helpers of libvdeplug_mod.so.2.
 * Export `struct vdeplug_module vdeplug_ops`. With this package's files
 * (there is no libvdeplug_mod.so link, hence -l:):
 *   D=$(vde_plug --libdir)
 *   cc -shared -fPIC -I"$D" -o libvdeplug_NAME.so NAME.c -L"$D" -l:libvdeplug_mod.so.2 -Wl,-rpath,"$D"
 * and put the file where plugins are searched (libvdeplug(3)), e.g.
 * "$D"/vdeplug/ or a directory named in VDEPLUGIN_PATH. */
#ifndef VDEPLUG_LIBVDEPLUG_MOD_H
#define VDEPLUG_LIBVDEPLUG_MOD_H

#include <stdint.h>
#include <time.h>
#include <sys/types.h>
#include <libvdeplug.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MAXDESCR 128
#define CONNECTED_P2P

/* Every plugin connection starts with these two fields; the library fills
 * them after the plugin's open returns. */
struct vdeconn {
	void *handle;
	struct vdeplug_module *module;
	unsigned char data[];
};

struct vdeplug_module {
	int flags; /* unused */
	VDECONN *(*vde_open_real)(char *given_vde_url, char *descr, int interface_version,
			struct vde_open_args *open_args);
	ssize_t (*vde_recv)(VDECONN *conn, void *buf, size_t len, int flags);
	ssize_t (*vde_send)(VDECONN *conn, const void *buf, size_t len, int flags);
	int (*vde_datafd)(VDECONN *conn);
	int (*vde_ctlfd)(VDECONN *conn);
	int (*vde_close)(VDECONN *conn);
};

/* Option tables: {"tag", &value}, ..., {NULL, NULL}. Tags match by prefix;
 * a bare tag gets "". The text is processed in place (quotes, \x, %XX). */
struct vdeparms {
	char *tag;
	char **value;
};

/* "address/tag=value/tag": the address stays in str. 0, or -1 (EINVAL). */
int vde_parseparms(char *str, struct vdeparms *parms);
/* "path[tag=value/tag]": a first tag "" takes a bare item. */
int vde_parsepathparms(char *str, struct vdeparms *parms);
/* "head{inner}": str ends at '{'; returns inner (NULL without braces). */
char *vde_parsenestparms(char *str);

/* A MAC (+VLAN) learning table with a payload per entry. */
struct vde_hashtable;
struct vde_hashtable *_vde_hash_init(size_t payload_size, unsigned int hashsize, uint64_t seed);
#define vde_hash_init(type, hashsize, seed) _vde_hash_init(sizeof(type), (hashsize), (seed))
void vde_hash_fini(struct vde_hashtable *table);
/* The payload of dst if seen at or after too_old, else NULL. */
void *vde_find_in_hash(struct vde_hashtable *table, unsigned char *dst, int vlan, time_t too_old);
/* src was seen at now with this payload (copied). */
void vde_find_in_hash_update(struct vde_hashtable *table, unsigned char *src, int vlan, void *payload, time_t now);
/* Forget the entries whose payload equals this one. */
void vde_hash_delete(struct vde_hashtable *table, void *payload);

/* strtoull (base 0) with K/M/G/T suffixes (powers of 1024). */
unsigned long long strtoullm(const char *numstr);
/* "" is our egid, digits a gid, else a group name; -1 if unknown. */
gid_t vde_grnam2gid(const char *name);

#ifdef __cplusplus
}
#endif

#endif
