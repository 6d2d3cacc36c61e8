/* libvdeplug.h: the API of libvdeplug.so.2 (vdeplug4 4.0.1 compatible),
 * as implemented by vdeplug's Rust core (libvdeplug(3)). With this
 * package's files (there is no libvdeplug.so link, hence -l:):
 *   D=$(vde_plug --libdir)
 *   cc prog.c -I"$D" -L"$D" -l:libvdeplug.so.2 -Wl,-rpath,"$D" */
#ifndef VDEPLUG_LIBVDEPLUG_H
#define VDEPLUG_LIBVDEPLUG_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LIBVDEPLUG_INTERFACE_VERSION 1
#define VDE_MAXMTU 9216
#define VDE_ETHBUFSIZE (VDE_MAXMTU + 14 + 4)
#define PACKET_LENGTH_ERROR 1

typedef struct vdeconn VDECONN;
typedef struct vdestream VDESTREAM;

/* Options a caller may give (any may be left 0/NULL); the VNL wins. */
struct vde_open_args {
	int port;
	char *group;
	mode_t mode;
};

/* Open a Virtual Network Locator ("vxvde://239.1.2.3", "/tmp/sw[3]", "");
 * NULL with errno set on failure. */
VDECONN *vde_open_real(char *vnl, char *descr, int interface_version, struct vde_open_args *open_args);
#define vde_open(vnl, descr, open_args) \
	vde_open_real((vnl), (descr), LIBVDEPLUG_INTERFACE_VERSION, (open_args))

/* One Ethernet frame (no FCS): its length; 0 when the peer is gone; -1
 * with errno (EAGAIN: nothing for you now). Poll vde_datafd first. */
ssize_t vde_recv(VDECONN *conn, void *buf, size_t len, int flags);
/* Send one frame: its length (a frame dropped for lack of room counts as
 * sent), or -1 with errno. */
ssize_t vde_send(VDECONN *conn, const void *buf, size_t len, int flags);
/* Readable exactly while vde_recv has something. */
int vde_datafd(VDECONN *conn);
/* Readable (EOF) when the peer hangs up; -1 if there is no control channel. */
int vde_ctlfd(VDECONN *conn);
int vde_close(VDECONN *conn);

/* The stream framing (2-byte big-endian length + frame) over your own byte
 * streams: frecv is called once per frame received. */
VDESTREAM *vdestream_open(void *opaque, int fdout,
		ssize_t (*frecv)(void *opaque, void *buf, size_t count),
		void (*ferr)(void *opaque, int type, char *format, ...));
ssize_t vdestream_send(VDESTREAM *vdestream, const void *buf, size_t len);
void vdestream_recv(VDESTREAM *vdestream, unsigned char *buf, size_t len);
void vdestream_close(VDESTREAM *vdestream);

#ifdef __cplusplus
}
#endif

#endif
