/* vdeopen VNL...: vde_open each VNL in turn (closing it again) and say
 * what happened, for tests/test_security.py:
 *   "ok" or "fail errno=N" per VNL, then "map=<file>" for every
 *   libvdeplug* file mapped at the end (the plugins loaded stay mapped
 *   while open, so each VNL's files are printed before it is closed).
 * Exit status: the number of failed opens. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <libvdeplug.h>

static void maps(void) {
	char line[4096];
	FILE *f = fopen("/proc/self/maps", "r");
	if (f == NULL) return;
	while (fgets(line, sizeof line, f) != NULL) {
		char *path = strchr(line, '/');
		if (path != NULL && strstr(path, "libvdeplug") != NULL) printf("map=%s", path);
	}
	fclose(f);
}

int main(int argc, char **argv) {
	int failed = 0;
	for (int i = 1; i < argc; i++) {
		VDECONN *c = vde_open(argv[i], "vdeopen", NULL);
		if (c == NULL) {
			printf("fail errno=%d\n", errno);
			failed++;
			continue;
		}
		printf("ok\n");
		maps();
		vde_close(c);
	}
	fflush(stdout);
	return failed;
}
