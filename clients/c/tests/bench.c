/* Round trips per second through the C library on both sides: this client -> besterd -> the
 * C echo example, keeping `window` requests in flight for `secs` seconds. Prints one JSON line
 * with the rate and the CPU per request of this client and of the handler (its pid from
 * besterd's log, read through /proc). Usage: bench HOST PORT WINDOW SECS HANDLER_PID */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bester.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double self_cpu(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
           (double)u.ru_stime.tv_usec / 1e6;
}

/* utime + stime of pid, in seconds (-1 if unreadable). */
static double proc_cpu(const char *pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* After the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int main(int argc, char **argv) {
    if (argc != 6) return 2;
    int window = atoi(argv[3]);
    double secs = atof(argv[4]);
    bester_error err;
    bester_client *c = bester_connect(argv[1], argv[2], 20000, &err);
    if (!c || bester_login_password(c, "bench", "bench-pw", &err) < 0) {
        fprintf(stderr, "%s: %s\n", err.code, err.text);
        return 1;
    }
    const char *data = "{\"n\":12345,\"text\":\"a small request of the usual size\"}";
    char (*ids)[24] = calloc((size_t)window, 24);
    for (int i = 0; i < window; i++)
        if (bester_send(c, "echo", data, ids[i], &err) < 0) return 1;
    double cpu0 = self_cpu(), h0 = proc_cpu(argv[5]), t0 = now(), end = t0 + secs;
    long done = 0;
    for (int slot = 0;; slot = (slot + 1) % window) {
        bester_message m;
        if (bester_recv(c, ids[slot], &m, &err) < 0) {
            fprintf(stderr, "%s: %s\n", err.code, err.text);
            return 1;
        }
        bester_message_free(&m);
        done++;
        if ((done & 255) == 0 && now() >= end) break;
        if (bester_send(c, "echo", data, ids[slot], &err) < 0) return 1;
    }
    double t = now() - t0, cpu = self_cpu() - cpu0, h = proc_cpu(argv[5]) - h0;
    printf("{\"window\":%d,\"round_trips_per_s\":%.0f,\"client_cpu_us_per_request\":%.2f,"
           "\"handler_cpu_us_per_request\":%.2f}\n",
           window, (double)done / t, cpu / (double)done * 1e6, h0 < 0 ? -1.0 : h / (double)done * 1e6);
    free(ids);
    bester_close(c);
    return 0;
}
