/* A plugin planted by another user (tests/test_security.py): being loaded
 * at all is the attack (its constructor runs), so the constructor leaves
 * a mark, the file named by $PLANTED_MARK. No vdeplug_ops: a search that
 * reaches it goes on past it. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((constructor)) static void planted(void) {
	const char *mark = getenv("PLANTED_MARK");
	FILE *f = mark ? fopen(mark, "a") : NULL;
	if (f != NULL) fclose(f);
}
