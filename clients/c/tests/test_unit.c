/* Unit and fuzz tests of bester.c over protocol/vectors (run under ASan and UBSan):
 * frames (and the stream split at every byte), the JSON parser's refusals, the handler loop
 * with the echo callback against handlers.json, the answer builders against messages.json,
 * and random mutations of every vector that must never crash.
 * Usage: test_unit VECTORS_DIR */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bester.h"

static int failures;
#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            fprintf(stderr, "%s:%d: FAIL %s: ", __FILE__, __LINE__, #cond);                               \
            fprintf(stderr, __VA_ARGS__);                                                                  \
            fprintf(stderr, "\n");                                                                         \
            failures++;                                                                                    \
        }                                                                                                  \
    } while (0)

static char *slurp(const char *dir, const char *name, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    bester_buf b = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) bester_buf_add(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return b.data;
}

static bester_json *load(const char *dir, const char *name, char **text) {
    size_t len;
    *text = slurp(dir, name, &len);
    bester_error err;
    bester_json *v = bester_json_parse(*text, len, &err);
    if (!v) {
        fprintf(stderr, "%s: %s %s\n", name, err.code, err.text);
        exit(2);
    }
    return v;
}

static size_t unhex(const char *hex, unsigned char *out) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    return n;
}

static void test_frames(const char *dir) {
    char *text;
    bester_json *v = load(dir, "frames.json", &text);
    const bester_json *valid = bester_json_get(v, "valid");
    size_t nvalid = 0;
    static unsigned char raw[1 << 16];
    for (const bester_json *c = valid->child; c; c = c->next, nvalid++) {
        const char *json = bester_json_string(bester_json_get(c, "json"));
        size_t n = unhex(bester_json_string(bester_json_get(c, "hex")), raw);
        bester_decoder d;
        bester_decoder_init(&d, BESTER_MAX_FRAME);
        char *body;
        size_t len;
        CHECK(bester_decoder_feed(&d, raw, n) == 0 && bester_decoder_next(&d, &body, &len) == 1, "%s", json);
        CHECK(len == strlen(json) && memcmp(body, json, len) == 0, "%s", json);
        bester_error err;
        bester_json *parsed = bester_json_parse(body, len, &err);
        CHECK(parsed && parsed->type == BESTER_JSON_OBJECT, "%s", json);
        bester_json_free(parsed);
        free(body);
        bester_decoder_free(&d);
        /* The encoder writes the same bytes. */
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        CHECK(bester_write_frame(sv[0], json, strlen(json)) == 0, "write");
        close(sv[0]);
        static unsigned char back[1 << 16];
        ssize_t got = read(sv[1], back, sizeof back);
        CHECK(got == (ssize_t)n && memcmp(back, raw, n) == 0, "encoded %s", json);
        CHECK(bester_read_frame(sv[1], &body, &len, BESTER_MAX_FRAME) == 0, "a clean EOF is 0");
        close(sv[1]);
        /* The frame cut anywhere: EOF inside a frame is EPROTO. */
        for (size_t cut = 1; cut < n; cut++) {
            socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
            write(sv[0], raw, cut);
            close(sv[0]);
            errno = 0;
            CHECK(bester_read_frame(sv[1], &body, &len, BESTER_MAX_FRAME) == -1 && errno == EPROTO, "cut at %zu", cut);
            close(sv[1]);
        }
    }
    const bester_json *invalid = bester_json_get(v, "invalid");
    for (const bester_json *c = invalid->child; c; c = c->next) {
        const char *code = bester_json_string(bester_json_get(c, "code"));
        size_t n = unhex(bester_json_string(bester_json_get(c, "hex")), raw);
        bester_decoder d;
        bester_decoder_init(&d, BESTER_MAX_FRAME);
        char *body = NULL;
        size_t len;
        bester_decoder_feed(&d, raw, n);
        int r = bester_decoder_next(&d, &body, &len);
        if (strcmp(code, "frame_too_large") == 0) {
            CHECK(r == -1, "%s", code);
        } else {
            bester_error err;
            CHECK(r == 1, "%s", code);
            bester_json *j = r == 1 ? bester_json_parse(body, len, &err) : NULL;
            CHECK(r == 1 && !j && strcmp(err.code, code) == 0, "want %s got %s", code, r == 1 ? err.code : "-");
            free(body);
        }
        bester_decoder_free(&d);
        /* bester_read_frame refuses the oversize length before reading the body. */
        if (strcmp(code, "frame_too_large") == 0) {
            int sv[2];
            socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
            write(sv[0], raw, n);
            char *b2;
            size_t l2;
            errno = 0;
            CHECK(bester_read_frame(sv[1], &b2, &l2, BESTER_MAX_FRAME) == -1 && errno == EMSGSIZE, "read_frame");
            close(sv[0]);
            close(sv[1]);
        }
    }
    /* The stream: every split in two, and one byte at a time. */
    size_t n = unhex(bester_json_string(bester_json_get(bester_json_get(v, "stream"), "hex")), raw);
    for (size_t split = 0; split <= n + 1; split++) {
        bester_decoder d;
        bester_decoder_init(&d, BESTER_MAX_FRAME);
        size_t frames = 0;
        const bester_json *want = valid->child;
        for (size_t i = 0; i < n;) {
            size_t step = split > n ? 1 : (i == 0 && split ? split : n - i);
            bester_decoder_feed(&d, raw + i, step);
            i += step;
            char *body;
            size_t len;
            while (bester_decoder_next(&d, &body, &len) == 1) {
                const char *json = bester_json_string(bester_json_get(want, "json"));
                CHECK(want && len == strlen(json) && memcmp(body, json, len) == 0, "split %zu frame %zu", split, frames);
                want = want ? want->next : NULL;
                frames++;
                free(body);
            }
        }
        CHECK(frames == nvalid && bester_decoder_pending(&d) == 0, "split %zu: %zu frames", split, frames);
        bester_decoder_free(&d);
    }
    bester_json_free(v);
    free(text);
}

static void test_messages(const char *dir) {
    char *text;
    bester_json *v = load(dir, "messages.json", &text);
    int checked = 0;
    for (const bester_json *c = bester_json_get(v, "cases")->child; c; c = c->next) {
        const bester_json *js = bester_json_get(c, "json");
        const char *code = bester_json_string(bester_json_get(c, "code"));
        const char *error = bester_json_string(bester_json_get(c, "error"));
        int valid = bester_json_get(c, "valid")->type == BESTER_JSON_TRUE;
        bester_error err;
        bester_json *j = bester_json_parse(js->str, js->str_len, &err);
        if (valid) {
            CHECK(j != NULL, "%s", js->str);
        } else if (code && (strcmp(code, "invalid_json") == 0 || strcmp(code, "invalid_utf8") == 0)) {
            CHECK(!j && strcmp(err.code, code) == 0, "%s: want %s got %s", js->str, code, j ? "ok" : err.code);
            checked++;
        } else if (error && (strstr(error, "duplicate key") || strstr(error, "nested deeper"))) {
            CHECK(!j && strcmp(err.code, "invalid_message") == 0, "%s", js->str);
            checked++;
        }
        bester_json_free(j);
    }
    CHECK(checked > 0, "no refusal vectors checked");
    bester_json_free(v);
    free(text);
}

static void test_json_edges(void) {
    struct {
        const char *text;
        const char *code; /* NULL: valid */
    } cases[] = {
        {"{}", NULL}, {" [1, -0.5e+3, true, false, null, \"\\u00e9\\ud83d\\ude00\"] ", NULL},
        {"\"\\ud800\"", "invalid_json"}, {"\"\\udc00\"", "invalid_json"}, {"\"\\ud800\\u0041\"", "invalid_json"},
        {"\"\xc0\xaf\"", "invalid_utf8"}, {"\"\xed\xa0\x80\"", "invalid_utf8"}, {"\"\xf4\x90\x80\x80\"", "invalid_utf8"},
        {"01", "invalid_json"}, {"-", "invalid_json"}, {"1.", "invalid_json"}, {"1e", "invalid_json"},
        {"NaN", "invalid_json"}, {"\"a\nb\"", "invalid_json"}, {"{} x", "invalid_json"}, {"", "invalid_json"},
        {"{\"a\":1,\"a\":2}", "invalid_message"}, {"{\"a\":{\"b\":1,\"b\":1}}", "invalid_message"},
        {"{\"a\" 1}", "invalid_json"}, {"[1,]", "invalid_json"}, {"{,}", "invalid_json"}, {"tru", "invalid_json"},
        {"\"\\x\"", "invalid_json"}, {"\"abc", "invalid_json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bester_error err;
        bester_json *j = bester_json_parse(cases[i].text, strlen(cases[i].text), &err);
        if (cases[i].code) CHECK(!j && strcmp(err.code, cases[i].code) == 0, "%s: got %s", cases[i].text, j ? "ok" : err.code);
        else CHECK(j != NULL, "%s: %s %s", cases[i].text, err.code, err.text);
        bester_json_free(j);
    }
    /* 64 levels are fine, 65 are not. */
    char deep[200];
    for (int depth = 64; depth <= 65; depth++) {
        memset(deep, '[', (size_t)depth);
        memset(deep + depth, ']', (size_t)depth);
        bester_error err;
        bester_json *j = bester_json_parse(deep, (size_t)depth * 2, &err);
        CHECK((depth == 64) == (j != NULL), "depth %d", depth);
        bester_json_free(j);
    }
    /* Quoting round-trips every byte string of valid UTF-8, control characters included. */
    const char *s = "a\"b\\c\n\t\x01\x1f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80/";
    bester_buf b = {0};
    bester_buf_quote(&b, s, strlen(s));
    bester_json *j = bester_json_parse(b.data, b.len, NULL);
    CHECK(j && j->str_len == strlen(s) && memcmp(j->str, s, j->str_len) == 0, "quote %s", b.data);
    bester_json_free(j);
    bester_buf_free(&b);
    const char nul[] = "\"a\\u0000b\"";
    j = bester_json_parse(nul, sizeof nul - 1, NULL);
    CHECK(j && j->str_len == 3 && j->str[1] == 0, "NUL in a string");
    bester_json_free(j);
}

/* ---- the handler loop --------------------------------------------------------------------- */

static int echo(const bester_req *req, bester_answer *answer, void *userdata) {
    (void)userdata;
    return bester_reply_type(answer, req->type, req->data);
}

/* Feed `in` to bester_serve with fn; return what it wrote (malloc'd) and its result. */
static char *serve_bytes(const char *in, size_t n, bester_handler_fn fn, size_t *out_len, int *rc) {
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    write(sv[0], in, n);
    shutdown(sv[0], SHUT_WR);
    *rc = bester_serve(sv[1], fn, NULL);
    close(sv[1]);
    bester_buf b = {0};
    char chunk[8192];
    ssize_t r;
    while ((r = read(sv[0], chunk, sizeof chunk)) > 0) bester_buf_add(&b, chunk, (size_t)r);
    close(sv[0]);
    *out_len = b.len;
    return b.data;
}

static void add_frame(bester_buf *b, const char *json, size_t n) {
    unsigned char h[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16), (unsigned char)(n >> 24)};
    bester_buf_add(b, (const char *)h, 4);
    bester_buf_add(b, json, n);
}

static void test_handler_vectors(const char *dir) {
    char *text;
    bester_json *v = load(dir, "handlers.json", &text);
    int cases = 0;
    for (const bester_json *c = bester_json_get(v, "cases")->child; c; c = c->next) {
        if (strcmp(bester_json_string(bester_json_get(c, "handler")), "echo") != 0) continue;
        cases++;
        bester_buf in = {0};
        for (const bester_json *r = bester_json_get(c, "requests")->child; r; r = r->next) add_frame(&in, r->raw, r->raw_len);
        size_t len;
        int rc;
        char *out = serve_bytes(in.data, in.len, echo, &len, &rc);
        CHECK(rc == 0, "serve returns 0 at EOF");
        bester_decoder d;
        bester_decoder_init(&d, BESTER_MAX_FRAME);
        bester_decoder_feed(&d, out, len);
        for (const bester_json *a = bester_json_get(c, "answers")->child; a; a = a->next) {
            char *body;
            size_t blen;
            int got = bester_decoder_next(&d, &body, &blen);
            CHECK(got == 1, "%s: missing answer", bester_json_string(bester_json_get(c, "name")));
            if (got != 1) break;
            bester_json *j = bester_json_parse(body, blen, NULL);
            CHECK(bester_json_equal(j, a), "%s: got %s want %.*s", bester_json_string(bester_json_get(c, "name")), body,
                  (int)a->raw_len, a->raw);
            bester_json_free(j);
            free(body);
        }
        CHECK(bester_decoder_pending(&d) == 0, "extra bytes");
        char *extra;
        size_t elen;
        CHECK(bester_decoder_next(&d, &extra, &elen) == 0, "an extra answer (a report answered?)");
        bester_decoder_free(&d);
        free(out);
        bester_buf_free(&in);
    }
    CHECK(cases > 0, "no echo vectors");
    bester_json_free(v);
    free(text);
    /* An oversize frame: bester_serve fails. */
    size_t len;
    int rc;
    free(serve_bytes("\xff\xff\xff\xff", 4, echo, &len, &rc));
    CHECK(rc == -1 && len == 0, "oversize frame");
}

static const char *vector_name;
static int shapes(const bester_req *req, bester_answer *a, void *userdata) {
    (void)req;
    (void)userdata;
    static const char *const two[] = {"alice", "bob"};
    static const char *const bob[] = {"bob"};
    if (strcmp(vector_name, "reply") == 0) return bester_reply(a, "{\"hello\":\"world\"}");
    if (strcmp(vector_name, "sendClients") == 0) return bester_send_clients(a, two, 2, "\"hi\"");
    if (strcmp(vector_name, "error answer") == 0) return bester_reply_error(a, "not_in_room", "no");
    if (strcmp(vector_name, "push with an id") == 0) return bester_push_clients(a, bob, 1, "news", "1", "p1");
    if (strcmp(vector_name, "bad data") == 0) return bester_reply(a, "{not json");
    return -1;
}

static void test_answer_shapes(const char *dir) {
    char *text;
    bester_json *v = load(dir, "messages.json", &text);
    const char *names[] = {"reply", "sendClients", "error answer", "push with an id"};
    const char *types[] = {"echo", "chat", "chat", "news"};
    for (size_t i = 0; i < 4; i++) {
        const bester_json *want = NULL;
        for (const bester_json *c = bester_json_get(v, "cases")->child; c; c = c->next)
            if (strcmp(bester_json_string(bester_json_get(c, "name")), names[i]) == 0) want = bester_json_get(c, "json");
        CHECK(want != NULL, "%s", names[i]);
        if (!want) continue;
        vector_name = names[i];
        char req[256];
        int n = snprintf(req, sizeof req,
                         "{\"header\":{\"kind\":\"request\",\"request\":\"17\",\"scope\":\"client\"},\"payload\":{\"type\":\"%s\"}}",
                         types[i]);
        bester_buf in = {0};
        add_frame(&in, req, (size_t)n);
        size_t len;
        int rc;
        char *out = serve_bytes(in.data, in.len, shapes, &len, &rc);
        bester_json *got = len > 4 ? bester_json_parse(out + 4, len - 4, NULL) : NULL;
        bester_json *exp = bester_json_parse(want->str, want->str_len, NULL);
        CHECK(bester_json_equal(got, exp), "%s: got %.*s want %s", names[i], (int)(len > 4 ? len - 4 : 0), out + 4, want->str);
        bester_json_free(got);
        bester_json_free(exp);
        free(out);
        bester_buf_free(&in);
    }
    /* Data that is not JSON, or a callback that fails: internal_error. */
    vector_name = "bad data";
    const char *req = "{\"header\":{\"kind\":\"request\",\"request\":\"1\"},\"payload\":{\"type\":\"t\"}}";
    bester_buf in = {0};
    add_frame(&in, req, strlen(req));
    size_t len;
    int rc;
    char *out = serve_bytes(in.data, in.len, shapes, &len, &rc);
    const char *want = "{\"header\":{\"status\":\"error\",\"command\":\"reply\",\"request\":\"1\"},\"payload\":{\"type\":\"t\",\"data\":{\"error\":\"the t handler failed\",\"code\":\"internal_error\"}}}";
    CHECK(len == strlen(want) + 4 && memcmp(out + 4, want, strlen(want)) == 0, "%.*s", (int)len, out);
    free(out);
    bester_buf_free(&in);
    bester_json_free(v);
    free(text);
}

/* ---- fuzz --------------------------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fuzz_text(const char *src, size_t n, int rounds) {
    static const char alphabet[] = "{}[]\":,\\u0123456789eE+-.truefalsn \t\n\xc3\xa9\xed\xa0\x80\xff";
    char *buf = malloc(n + 64);
    for (int r = 0; r < rounds; r++) {
        size_t len = n;
        memcpy(buf, src, n);
        int edits = 1 + (int)(next_rand() % 4);
        for (int e = 0; e < edits && len; e++) {
            size_t at = next_rand() % len;
            switch (next_rand() % 4) {
            case 0: buf[at] = alphabet[next_rand() % (sizeof alphabet - 1)]; break;
            case 1: len = at; break; /* truncate */
            case 2:
                if (len < n + 60) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = alphabet[next_rand() % (sizeof alphabet - 1)];
                    len++;
                }
                break;
            default:
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
            }
        }
        bester_error err;
        bester_json *j = bester_json_parse(buf, len, &err);
        bester_json_free(j);
        /* As a frame for the handler loop too (bounded so it stays quick). */
        if (r % 64 == 0) {
            bester_buf in = {0};
            add_frame(&in, buf, len);
            size_t ol;
            int rc;
            /* Its logging of the broken frames goes nowhere. */
            fflush(stderr);
            int saved = dup(2), null = open("/dev/null", O_WRONLY);
            dup2(null, 2);
            free(serve_bytes(in.data, in.len, echo, &ol, &rc));
            dup2(saved, 2);
            close(saved);
            close(null);
            bester_buf_free(&in);
        }
    }
    free(buf);
}

static void test_fuzz(const char *dir) {
    const char *files[] = {"frames.json", "messages.json", "handlers.json", "auth_handler.json", "key_login.json"};
    for (size_t f = 0; f < 5; f++) {
        char *text;
        bester_json *v = load(dir, files[f], &text);
        fuzz_text(text, strlen(text), 2000);
        /* Every string value that holds a frame body. */
        const bester_json *stack[256];
        size_t top = 0;
        stack[top++] = v;
        while (top) {
            const bester_json *x = stack[--top];
            if (x->type == BESTER_JSON_STRING && x->str_len && (x->str[0] == '{' || x->str[0] == '['))
                fuzz_text(x->str, x->str_len, 3000);
            if (x->type == BESTER_JSON_OBJECT && bester_json_get(x, "header")) fuzz_text(x->raw, x->raw_len, 3000);
            for (const bester_json *c = x->child; c && top < 256; c = c->next) stack[top++] = c;
        }
        bester_json_free(v);
        free(text);
    }
    /* Random bytes in random splits through the decoder. */
    for (int r = 0; r < 2000; r++) {
        bester_decoder d;
        bester_decoder_init(&d, 64);
        unsigned char chunk[32];
        for (int k = 0; k < 8; k++) {
            size_t n = next_rand() % sizeof chunk;
            for (size_t i = 0; i < n; i++) chunk[i] = (unsigned char)(next_rand() % 3 == 0 ? next_rand() : next_rand() % 8);
            bester_decoder_feed(&d, chunk, n);
            char *body;
            size_t len;
            int got;
            while ((got = bester_decoder_next(&d, &body, &len)) == 1) {
                CHECK(len <= 64, "decoded %zu bytes over the limit", len);
                bester_json_free(bester_json_parse(body, len, NULL));
                free(body);
            }
            if (got < 0) break;
        }
        bester_decoder_free(&d);
    }
}

/* The echo example as a process, as besterd starts it: it connects to $BESTER_SOCKET, answers,
 * and exits 0 when the socket closes; after a frame over 1 MiB it exits 1. */
static void test_echo_process(const char *echo_path) {
    for (int oversize = 0; oversize <= 1; oversize++) {
        char dir[] = "/tmp/bester-c-test-XXXXXX";
        CHECK(mkdtemp(dir) != NULL, "mkdtemp");
        char path[128];
        snprintf(path, sizeof path, "%s/echo.sock", dir);
        int ln = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sa = {0};
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        CHECK(bind(ln, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(ln, 1) == 0, "listen");
        pid_t pid = fork();
        if (pid == 0) {
            setenv("BESTER_SOCKET", path, 1);
            execl(echo_path, echo_path, (char *)NULL);
            _exit(127);
        }
        int c = accept(ln, NULL, NULL);
        if (oversize) {
            write(c, "\x01\x00\x10\x00", 4);
        } else {
            const char *req = "{\"header\":{\"kind\":\"request\",\"request\":\"1\"},\"payload\":{\"type\":\"echo\",\"data\":[1]}}";
            bester_write_frame(c, req, strlen(req));
            char *body;
            size_t len;
            CHECK(bester_read_frame(c, &body, &len, BESTER_MAX_FRAME) == 1 &&
                      strcmp(body, "{\"header\":{\"status\":\"ok\",\"command\":\"reply\",\"request\":\"1\"},\"payload\":{\"type\":\"echo\",\"data\":[1]}}") == 0,
                  "echo answer");
            free(body);
            close(c);
        }
        int status;
        waitpid(pid, &status, 0);
        if (oversize) CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit after an oversize frame: %d", status);
        else CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit at EOF: %d", status);
        if (oversize) close(c);
        close(ln);
        unlink(path);
        rmdir(dir);
    }
}

/* A server that floods the client with replies to ids it never sent and with pushes: the client
 * keeps at most 1024 of each and still gets its own reply. */
static void test_flooding_server(void) {
    int ln = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    CHECK(bind(ln, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(ln, 1) == 0 &&
              getsockname(ln, (struct sockaddr *)&sa, &sl) == 0,
          "listen");
    pid_t pid = fork();
    if (pid == 0) {
        int c = accept(ln, NULL, NULL);
        char *body;
        size_t len;
        if (bester_read_frame(c, &body, &len, BESTER_MAX_FRAME) != 1) _exit(1);
        free(body);
        const char *ok = "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\"},\"data\":{\"user\":\"alice\"}}";
        bester_write_frame(c, ok, strlen(ok));
        if (bester_read_frame(c, &body, &len, BESTER_MAX_FRAME) != 1) _exit(1);
        free(body);
        char frame[160];
        for (int i = 0; i < 3000; i++) {
            int n = snprintf(frame, sizeof frame, "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"x%d\",\"type\":\"t\"},\"data\":%d}", i, i);
            bester_write_frame(c, frame, (size_t)n);
            n = snprintf(frame, sizeof frame, "{\"header\":{\"status\":\"ok\",\"kind\":\"push\",\"type\":\"t\",\"from\":{\"user\":\"m\"}},\"data\":%d}", i);
            bester_write_frame(c, frame, (size_t)n);
        }
        const char *mine = "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"1\",\"type\":\"t\"},\"data\":\"mine\"}";
        bester_write_frame(c, mine, strlen(mine));
        char b;
        read(c, &b, 1); /* until the client closes */
        _exit(0);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(sa.sin_port));
    bester_error err;
    bester_client *c = bester_connect("127.0.0.1", port, 20000, &err);
    bester_message m;
    CHECK(c && bester_login_password(c, "alice", "pw", &err) == 0, "login");
    CHECK(bester_request(c, "t", NULL, &m, &err) == 0 && m.data_len == 6, "own reply: %s", err.text);
    bester_message_free(&m);
    size_t replies, pushes;
    bester_kept(c, &replies, &pushes);
    CHECK(replies == 1024 && pushes == 1024, "kept %zu replies, %zu pushes", replies, pushes);
    CHECK(bester_next_push(c, &m, 0, &err) == 1 && m.data_len == 4 && memcmp(m.data, "1976", 4) == 0,
          "the oldest pushes were dropped: %.*s", (int)m.data_len, m.data);
    bester_message_free(&m);
    bester_close(c);
    waitpid(pid, NULL, 0);
    close(ln);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: test_unit VECTORS_DIR ECHO_EXAMPLE\n");
        return 2;
    }
    test_echo_process(argv[2]);
    test_flooding_server();
    test_frames(argv[1]);
    test_messages(argv[1]);
    test_json_edges();
    test_handler_vectors(argv[1]);
    test_answer_shapes(argv[1]);
    test_fuzz(argv[1]);
    if (failures) {
        fprintf(stderr, "test_unit: %d failures\n", failures);
        return 1;
    }
    printf("test_unit: ok\n");
    return 0;
}
