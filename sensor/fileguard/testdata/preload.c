/* An injected library for TestInstalledProgramUnderLDPreloadIsNotQuarantined:
 * loaded with LD_PRELOAD into an innocent installed program, its
 * constructor overwrites every file in $TW_ENCRYPT_DIR with random bytes,
 * as an encryptor would, before the program's own main runs. */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

__attribute__((constructor)) static void encrypt_all(void) {
	const char *dir = getenv("TW_ENCRYPT_DIR");
	if (dir == NULL) return;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	if (dfd < 0) return;
	DIR *d = fdopendir(dfd);
	if (d == NULL) return;
	int rnd = open("/dev/urandom", O_RDONLY);
	char buf[65536];
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || strstr(e->d_name, ".csv") == NULL) continue;
		int fd = openat(dfd, e->d_name, O_RDWR);
		if (fd < 0) continue;
		struct stat st;
		if (fstat(fd, &st) == 0) {
			off_t left = st.st_size;
			while (left > 0) {
				ssize_t n = read(rnd, buf, left < (off_t)sizeof buf ? (size_t)left : sizeof buf);
				if (n <= 0) break;
				if (write(fd, buf, (size_t)n) != n) break;
				left -= n;
			}
		}
		close(fd);
	}
	closedir(d);
}
