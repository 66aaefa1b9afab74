/*
 * echo.c: the fast peers of the side-by-side benchmark (scripts/bench.sh compare), so that the
 * figures measure the brokers, not a Python handler. One single-threaded process per role, blocking
 * sockets, one read and one batched write per wake-up; nothing here is used by the broker itself.
 *
 *   echo bester [COMMAND DATA [replies]]
 *                            besterd handler: connects to $BESTER_SOCKET, answers every request
 *                            {"header":{...,"request":"T",...},"payload":P} with
 *                            {"header":{"status":"ok","request":"T"},"payload":P} (P copied as is);
 *                            with COMMAND and DATA (JSON) the answer's header also carries
 *                            "command":COMMAND,"commandData":DATA (and "replies":true), e.g.
 *                            `echo bester sendServers '["b"]'` (the federation benchmark); DATA
 *                            `@to` takes commandData from each request: the JSON array after the
 *                            payload's first "to": (`echo bester sendClients @to`, the
 *                            durable-memory benchmark: a storing push to the users it names)
 *   echo nats HOST PORT USER PASS SUBJECT
 *                            NATS responder: SUB SUBJECT, answers every MSG with a reply subject by
 *                            a PUB of the same payload to it
 *   echo unix-echo PATH      listens on a Unix socket, writes back every byte it reads
 *   echo relay PATH          listens on 127.0.0.1 (port printed on stdout), and relays the bytes of
 *                            each connection to a new connection to PATH and back: a plain TCP
 *                            relay with no broker logic (the floor of the benchmark)
 *
 * Readiness: "bester" is ready once connected (the broker's rule), the others print one line on
 * stdout ("ready" or the port) once they can be used. Every mode exits when its peer closes.
 * Loopback and Unix sockets only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FRAME (1 << 20)
#define BUF (4 << 20)

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Write everything (blocking socket). */
static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_init(struct buf *b, size_t cap) {
    b->p = malloc(cap);
    if (!b->p) die("malloc");
    b->len = 0;
    b->cap = cap;
}

static void buf_put(struct buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        fprintf(stderr, "echo: output buffer full\n");
        exit(1);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

/* Read more into `in`; returns 0 on EOF. */
static int fill(int fd, struct buf *in) {
    for (;;) {
        if (in->len == in->cap) {
            fprintf(stderr, "echo: input buffer full\n");
            exit(1);
        }
        ssize_t r = read(fd, in->p + in->len, in->cap - in->len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("read");
        in->len += (size_t)r;
        return r > 0;
    }
}

static void consume(struct buf *in, size_t used) {
    memmove(in->p, in->p + used, in->len - used);
    in->len -= used;
}

static int connect_unix(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect unix");
    return fd;
}

static int listen_unix(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind unix");
    if (listen(fd, 16) < 0) die("listen");
    return fd;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- besterd handler ---- */

static const char *find(const char *hay, size_t n, const char *needle) {
    return memmem(hay, n, needle, strlen(needle));
}

/* With `to` set, `extra` ends in "commandData": and the array after the payload's "to": follows
 * it in each answer. */
static void bester(const char *extra, int to) {
    const char *path = getenv("BESTER_SOCKET");
    if (!path) {
        fprintf(stderr, "echo: BESTER_SOCKET is not set\n");
        exit(1);
    }
    int fd = connect_unix(path);
    struct buf in, out;
    buf_init(&in, BUF);
    buf_init(&out, BUF + 4096);
    while (fill(fd, &in)) {
        size_t pos = 0;
        while (in.len - pos >= 4) {
            const unsigned char *h = (const unsigned char *)in.p + pos;
            uint32_t n = h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24;
            if (n > MAX_FRAME) {
                fprintf(stderr, "echo: frame of %u bytes\n", n);
                exit(1);
            }
            if (in.len - pos - 4 < n) break;
            const char *body = in.p + pos + 4;
            /* The broker writes {"header":{...},"payload":{...}}: the payload object runs from
             * after the first top-level "payload": to the last byte but one. A quote inside a JSON
             * string is always escaped, so the key cannot be matched inside a string. */
            const char *tok = find(body, n, "\"request\":\"");
            const char *pl = find(body, n, "},\"payload\":");
            if (!tok || !pl || body[n - 1] != '}') {
                fprintf(stderr, "echo: unexpected request %.*s\n", (int)n, body);
                exit(1);
            }
            tok += strlen("\"request\":\"");
            const char *tok_end = memchr(tok, '"', (size_t)(body + n - tok));
            pl += strlen("},\"payload\":");
            size_t pl_len = (size_t)(body + n - 1 - pl);
            static const char head[] = "{\"header\":{\"status\":\"ok\",\"request\":\"";
            static const char mid[] = "},\"payload\":";
            size_t extra_len = strlen(extra);
            const char *arr = NULL;
            size_t arr_len = 0;
            if (to) {
                /* A quote inside a JSON string is escaped, so "to": is a key here. */
                arr = find(pl, pl_len, "\"to\":[");
                const char *end = arr ? memchr(arr, ']', (size_t)(pl + pl_len - arr)) : NULL;
                if (!end) {
                    fprintf(stderr, "echo: no \"to\":[...] in %.*s\n", (int)pl_len, pl);
                    exit(1);
                }
                arr += strlen("\"to\":");
                arr_len = (size_t)(end + 1 - arr);
            }
            uint32_t len = (uint32_t)(sizeof head - 1 + (size_t)(tok_end - tok) + 1 + extra_len + arr_len + sizeof mid - 1 + pl_len + 1);
            if (out.len + 4 + len > out.cap) {
                write_all(fd, out.p, out.len);
                out.len = 0;
            }
            unsigned char le[4] = {len & 255, len >> 8 & 255, len >> 16 & 255, len >> 24};
            buf_put(&out, le, 4);
            buf_put(&out, head, sizeof head - 1);
            buf_put(&out, tok, (size_t)(tok_end - tok));
            buf_put(&out, "\"", 1);
            buf_put(&out, extra, extra_len);
            if (to) buf_put(&out, arr, arr_len);
            buf_put(&out, mid, sizeof mid - 1);
            buf_put(&out, pl, pl_len);
            buf_put(&out, "}", 1);
            pos += 4 + n;
        }
        consume(&in, pos);
        if (out.len) {
            write_all(fd, out.p, out.len);
            out.len = 0;
        }
    }
}

/* ---- NATS responder ---- */

static void nats(const char *host, int port, const char *user, const char *pass, const char *subject) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) die("address");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    nodelay(fd);
    char hello[1024];
    int hl = snprintf(hello, sizeof hello,
                      "CONNECT {\"verbose\":false,\"pedantic\":false,\"user\":\"%s\",\"pass\":\"%s\","
                      "\"name\":\"bench-responder\",\"lang\":\"c\",\"version\":\"1\",\"protocol\":1}\r\n"
                      "SUB %s 1\r\nPING\r\n",
                      user, pass, subject);
    write_all(fd, hello, (size_t)hl);
    struct buf in, out;
    buf_init(&in, BUF);
    buf_init(&out, BUF + 4096);
    int ready = 0;
    while (fill(fd, &in)) {
        size_t pos = 0;
        for (;;) {
            char *line = in.p + pos;
            char *eol = memmem(line, in.len - pos, "\r\n", 2);
            if (!eol) break;
            size_t ll = (size_t)(eol - line);
            if (ll >= 4 && memcmp(line, "MSG ", 4) == 0) {
                /* MSG <subject> <sid> [reply-to] <#bytes> */
                char *f[5];
                size_t fl[5];
                int nf = 0;
                char *p = line + 4;
                while (p < eol && nf < 5) {
                    char *s = p;
                    while (p < eol && *p != ' ') p++;
                    f[nf] = s;
                    fl[nf] = (size_t)(p - s);
                    nf++;
                    while (p < eol && *p == ' ') p++;
                }
                if (nf < 3) {
                    fprintf(stderr, "echo: bad MSG line\n");
                    exit(1);
                }
                size_t n = strtoul(f[nf - 1], NULL, 10);
                size_t need = ll + 2 + n + 2;
                if (in.len - pos < need) break;
                char *payload = eol + 2;
                if (nf == 4) {
                    if (out.len + n + fl[2] + 64 > out.cap) {
                        write_all(fd, out.p, out.len);
                        out.len = 0;
                    }
                    buf_put(&out, "PUB ", 4);
                    buf_put(&out, f[2], fl[2]);
                    char num[32];
                    int nl = snprintf(num, sizeof num, " %zu\r\n", n);
                    buf_put(&out, num, (size_t)nl);
                    buf_put(&out, payload, n);
                    buf_put(&out, "\r\n", 2);
                }
                pos += need;
                continue;
            }
            if (ll == 4 && memcmp(line, "PING", 4) == 0) {
                buf_put(&out, "PONG\r\n", 6);
            } else if (ll == 4 && memcmp(line, "PONG", 4) == 0) {
                if (!ready) {
                    ready = 1;
                    printf("ready\n");
                    fflush(stdout);
                }
            } else if (ll >= 4 && memcmp(line, "-ERR", 4) == 0) {
                fprintf(stderr, "echo: nats said %.*s\n", (int)ll, line);
                exit(1);
            }
            pos += ll + 2;
        }
        consume(&in, pos);
        if (out.len) {
            write_all(fd, out.p, out.len);
            out.len = 0;
        }
    }
}

/* ---- the floor: a byte relay in front of a byte echo ---- */

static void unix_echo(const char *path) {
    int l = listen_unix(path);
    printf("ready\n");
    fflush(stdout);
    int fd = accept(l, NULL, NULL);
    if (fd < 0) die("accept");
    char *b = malloc(BUF);
    for (;;) {
        ssize_t r = read(fd, b, BUF);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return;
        write_all(fd, b, (size_t)r);
    }
}

static void relay(const char *path) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0) die("socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(l, 16) < 0) die("listen");
    socklen_t al = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &al);
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);
    int c = accept(l, NULL, NULL);
    if (c < 0) die("accept");
    nodelay(c);
    int u = connect_unix(path);
    char *b = malloc(BUF);
    struct pollfd p[2] = {{.fd = c, .events = POLLIN}, {.fd = u, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t r = read(p[i].fd, b, BUF);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return;
            write_all(p[1 - i].fd, b, (size_t)r);
        }
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 2 && strcmp(argv[1], "bester") == 0) {
        bester("", 0);
    } else if ((argc == 4 || argc == 5) && strcmp(argv[1], "bester") == 0) {
        static char extra[4096];
        int to = strcmp(argv[3], "@to") == 0;
        int n = snprintf(extra, sizeof extra, ",\"command\":\"%s\"%s,\"commandData\":%s", argv[2],
                         argc == 5 && strcmp(argv[4], "replies") == 0 ? ",\"replies\":true" : "", to ? "" : argv[3]);
        if (n < 0 || (size_t)n >= sizeof extra) {
            fprintf(stderr, "echo: command too long\n");
            return 64;
        }
        bester(extra, to);
    } else if (argc == 7 && strcmp(argv[1], "nats") == 0) {
        nats(argv[2], atoi(argv[3]), argv[4], argv[5], argv[6]);
    } else if (argc == 3 && strcmp(argv[1], "unix-echo") == 0) {
        unix_echo(argv[2]);
    } else if (argc == 3 && strcmp(argv[1], "relay") == 0) {
        relay(argv[2]);
    } else {
        fprintf(stderr, "usage: echo bester [COMMAND DATA [replies]] | nats HOST PORT USER PASS SUBJECT | unix-echo PATH | relay PATH\n");
        return 64;
    }
    return 0;
}
