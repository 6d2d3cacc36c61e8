/* vdepeer: a libvdeplug program for the tests, built against Debian's
 * <libvdeplug.h> and run on either library (ours or Debian's).
 *
 *   vdepeer VNL pingpong ID COUNT TIMEOUT  send numbered frames (source
 *       02:00:00:00:00:ID) until COUNT valid frames of another ID arrived;
 *       every payload is checked
 *   vdepeer VNL echo TIMEOUT     send back every frame (until idle TIMEOUT s)
 *   vdepeer VNL threads COUNT    one thread sends COUNT numbered frames (at
 *       most 32 unanswered), another receives them back from an echo peer
 *       on the same connection: lost, duplicated or corrupted frames fail
 *   vdepeer VNL sink SECONDS     count the frames received (receive cost alone)
 *   vdepeer VNL relay VNL2       join two networks frame by frame with
 *       vde_recv/vde_send (C vde_plug's loop; benches/run.py's library relay)
 *
 * First line printed: "lib=<file of vde_open_real>" (dladdr). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <libvdeplug.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* A frame: broadcast, source 02:..:id, type 0x88b5, id, seq, pattern. */
static size_t make(unsigned char *f, int id, uint32_t seq) {
	size_t len = 60 + (seq * 37) % 1455;
	memset(f, 0xff, 6);
	unsigned char src[6] = {2, 0, 0, 0, 0, (unsigned char)id};
	memcpy(f + 6, src, 6);
	f[12] = 0x88; f[13] = 0xb5; f[14] = (unsigned char)id;
	memcpy(f + 15, &seq, 4);
	for (size_t i = 19; i < len; i++) f[i] = (unsigned char)(seq + i);
	return len;
}

/* -1: not one of ours; else its id; *seq set; payload checked. */
static int check(const unsigned char *f, ssize_t n, uint32_t *seq) {
	if (n < 19 || f[12] != 0x88 || f[13] != 0xb5) return -1;
	memcpy(seq, f + 15, 4);
	if ((size_t)n != 60 + (*seq * 37) % 1455) return -2;
	for (ssize_t i = 19; i < n; i++)
		if (f[i] != (unsigned char)(*seq + i)) return -2;
	return f[14];
}

static VDECONN *conn;
static atomic_uint sent, got, bad;

static int wait_in(int ms) {
	struct pollfd p = {.fd = vde_datafd(conn), .events = POLLIN};
	return poll(&p, 1, ms);
}

static int pingpong(int id, unsigned count, double timeout) {
	unsigned char f[VDE_ETHBUFSIZE];
	double end = now() + timeout, next = 0;
	uint32_t seq = 0;
	unsigned ok = 0, others = 0;
	double linger = 0; /* once done, keep sending a second so the peer finishes too */
	while (now() < end) {
		if (ok >= count) {
			if (linger == 0) linger = now() + 1;
			else if (now() >= linger) break;
		}
		if (now() >= next) {
			size_t len = make(f, id, seq++);
			/* ECONNREFUSED: the peer is not up yet (udp, ptp) */
			if (vde_send(conn, f, len, 0) < 0 && errno != ECONNREFUSED && errno != ENOTCONN && errno != EAGAIN && ok < count) { perror("vde_send"); return 1; }
			next = now() + 0.01;
		}
		if (wait_in(10) <= 0) continue;
		ssize_t n = vde_recv(conn, f, sizeof f, 0);
		if (n < 0 && (errno == EAGAIN || errno == ECONNREFUSED || errno == EINTR)) continue;
		if (n <= 0) { fprintf(stderr, "vde_recv: %zd %s\n", n, strerror(errno)); return 1; }
		if (n < 14) continue; /* 1: an event the plugin consumed (vdeplug4's netnode) */
		uint32_t s;
		int from = check(f, n, &s);
		if (from == -2) { fprintf(stderr, "corrupted frame of %zd bytes\n", n); return 1; }
		if (from >= 0 && from != id) ok++;
		else others++;
	}
	printf("pingpong id=%d sent=%u got=%u\n", id, seq, ok);
	return ok >= count ? 0 : 1;
}

static int echo(double idle) {
	unsigned char f[VDE_ETHBUFSIZE];
	double end = now() + idle;
	unsigned n_echo = 0;
	while (now() < end) {
		if (wait_in(50) <= 0) continue;
		ssize_t n = vde_recv(conn, f, sizeof f, 0);
		if (n < 0 && errno == EAGAIN) continue;
		if (n <= 0) break;
		if (vde_send(conn, f, n, 0) != n) { perror("vde_send"); return 1; }
		n_echo++;
		end = now() + idle;
	}
	printf("echoed=%u\n", n_echo);
	return 0;
}

static unsigned total;
static unsigned char *seen;

static void *sender(void *arg) {
	(void)arg;
	unsigned char f[VDE_ETHBUFSIZE];
	for (uint32_t seq = 0; seq < total; seq++) {
		while (atomic_load(&sent) - atomic_load(&got) >= 32) usleep(50);
		size_t len = make(f, 7, seq);
		if (vde_send(conn, f, len, 0) != (ssize_t)len) { perror("vde_send"); atomic_fetch_add(&bad, 1); break; }
		atomic_fetch_add(&sent, 1);
	}
	return NULL;
}

static int threads(unsigned count) {
	total = count;
	seen = calloc(count, 1);
	pthread_t t;
	pthread_create(&t, NULL, sender, NULL);
	unsigned char f[VDE_ETHBUFSIZE];
	double end = now() + 60;
	while (atomic_load(&got) < count && now() < end && !atomic_load(&bad)) {
		if (wait_in(100) <= 0) continue;
		ssize_t n = vde_recv(conn, f, sizeof f, 0);
		if (n < 0 && errno == EAGAIN) continue;
		if (n <= 0) break;
		uint32_t s;
		int from = check(f, n, &s);
		if (from != 7 || s >= count || seen[s]) { atomic_fetch_add(&bad, 1); continue; }
		seen[s] = 1;
		atomic_fetch_add(&got, 1);
	}
	pthread_join(t, NULL);
	printf("threads sent=%u got=%u bad=%u\n", atomic_load(&sent), atomic_load(&got), atomic_load(&bad));
	return atomic_load(&got) == count && atomic_load(&bad) == 0 ? 0 : 1;
}

/* Count frames received for `seconds` (a receive-only load). */
static int sink(double seconds) {
	unsigned char f[VDE_ETHBUFSIZE];
	unsigned long n_frames = 0;
	double end = now() + seconds;
	while (now() < end) {
		if (wait_in(100) <= 0) continue;
		ssize_t n = vde_recv(conn, f, sizeof f, 0);
		if (n >= 14) n_frames++;
	}
	printf("sink frames=%lu fps=%.0f\n", n_frames, n_frames / seconds);
	return 0;
}

/* Up to 64 frames from a to b, while a's data fd stays readable. */
static int pump(VDECONN *a, VDECONN *b) {
	unsigned char f[VDE_ETHBUFSIZE];
	struct pollfd p = {.fd = vde_datafd(a), .events = POLLIN};
	for (int k = 0; k < 64 && poll(&p, 1, 0) > 0; k++) {
		ssize_t n = vde_recv(a, f, sizeof f, 0);
		if (n == 0) return -1;
		if (n >= 14) vde_send(b, f, n, 0);
	}
	return 0;
}

static int relay(const char *vnl2) {
	VDECONN *other = vde_open((char *)vnl2, "vdepeer", NULL);
	if (other == NULL) { fprintf(stderr, "vde_open %s: %s\n", vnl2, strerror(errno)); return 1; }
	struct pollfd p[2] = {{.fd = vde_datafd(conn), .events = POLLIN}, {.fd = vde_datafd(other), .events = POLLIN}};
	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR) break;
		if ((p[0].revents & POLLIN) && pump(conn, other) < 0) break;
		if ((p[1].revents & POLLIN) && pump(other, conn) < 0) break;
	}
	vde_close(other);
	return 0;
}

int main(int argc, char *argv[]) {
	setvbuf(stdout, NULL, _IOLBF, 0); /* a test that times out still sees how far we got */
	if (argc < 3) { fprintf(stderr, "usage: vdepeer VNL pingpong|echo|threads ...\n"); return 2; }
	Dl_info info;
	if (dladdr((void *)vde_open_real, &info) && info.dli_fname) printf("lib=%s\n", info.dli_fname);
	fflush(stdout);
	conn = vde_open(argv[1], "vdepeer", NULL);
	if (conn == NULL) { fprintf(stderr, "vde_open %s: %s\n", argv[1], strerror(errno)); return 1; }
	printf("open\n");
	fflush(stdout);
	int rc;
	if (strcmp(argv[2], "pingpong") == 0 && argc >= 6)
		rc = pingpong(atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
	else if (strcmp(argv[2], "echo") == 0 && argc >= 4)
		rc = echo(atof(argv[3]));
	else if (strcmp(argv[2], "threads") == 0 && argc >= 4)
		rc = threads(atoi(argv[3]));
	else if (strcmp(argv[2], "sink") == 0 && argc >= 4)
		rc = sink(atof(argv[3]));
	else if (strcmp(argv[2], "relay") == 0 && argc >= 4)
		rc = relay(argv[3]);
	else { fprintf(stderr, "bad mode\n"); rc = 2; }
	fflush(stdout);
	vde_close(conn);
	return rc;
}
