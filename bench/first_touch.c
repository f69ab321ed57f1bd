/*
 * first_touch.c - what a first touch of fresh anonymous memory costs on this machine, with
 * 2 MiB transparent huge pages and with 4 KiB pages: 256 MiB mapped, one byte written per
 * 4 KiB, three times in a row in one process (munmap between). On a VM whose guest hands
 * freed memory back to the host (virtio-balloon free page reporting), the first round of a
 * process started after a few seconds of idle pays the host's faults; the engines' frame
 * slabs (csrc/cache.c) are 2 MiB huge pages, so a large write transaction pays it too.
 *
 *     cc -O2 -o /tmp/first_touch bench/first_touch.c && /tmp/first_touch huge && /tmp/first_touch small
 *
 * Layer: benchmark; POSIX and Linux madvise only (no project code).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const size_t len = (size_t)256 << 20, align = (size_t)2 << 20;
    int huge = argc > 1 && argv[1][0] == 'h';
    for (int r = 0; r < 3; r++) {
        char *m = mmap(NULL, len + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (m == MAP_FAILED)
            return 1;
        char *p = (char *)(((unsigned long)m + align - 1) & ~(unsigned long)(align - 1));
        (void)madvise(p, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        double t = now();
        for (size_t i = 0; i < len; i += 4096)
            p[i] = 1;
        printf("%s pages, round %d: %.1f ms for 256 MiB\n", huge ? "2 MiB" : "4 KiB", r,
               (now() - t) * 1e3);
        munmap(m, len + align);
    }
    return 0;
}
