/* bester.c: frames, a strict JSON parser, a blocking client and a handler loop for besterd.
 * libc (POSIX) only. See bester.h for the contract of each function. */
#define _POSIX_C_SOURCE 200809L
#include "bester.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void set_error(bester_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#include <stdarg.h>
static void set_error(bester_error *err, const char *code, const char *fmt, ...) {
    if (!err) return;
    snprintf(err->code, sizeof err->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof err->text, fmt, ap);
    va_end(ap);
}

/* ---- frames ------------------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK) w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int bester_write_frame(int fd, const char *body, size_t len) {
    if (len > BESTER_MAX_FRAME) {
        errno = EMSGSIZE;
        return -1;
    }
    unsigned char head[4] = {(unsigned char)len, (unsigned char)(len >> 8), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 24)};
    /* One write for small frames keeps a frame in one segment. */
    if (len <= 4096) {
        char tmp[4100];
        memcpy(tmp, head, 4);
        memcpy(tmp + 4, body, len);
        return write_all(fd, tmp, len + 4);
    }
    if (write_all(fd, (const char *)head, 4) < 0) return -1;
    return write_all(fd, body, len);
}

/* Read exactly n bytes: n, or the count read before EOF, or -1. */
static ssize_t read_full(int fd, char *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int bester_read_frame(int fd, char **body, size_t *len, size_t max) {
    unsigned char head[4];
    ssize_t r = read_full(fd, (char *)head, 4);
    if (r < 0) return -1;
    if (r == 0) return 0;
    if (r < 4) {
        errno = EPROTO;
        return -1;
    }
    uint32_t n = (uint32_t)head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 24;
    if (n > max) {
        errno = EMSGSIZE;
        return -1;
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) return -1;
    r = read_full(fd, buf, n);
    if (r < 0 || (size_t)r < n) {
        free(buf);
        if (r >= 0) errno = EPROTO;
        return -1;
    }
    buf[n] = 0;
    *body = buf;
    *len = n;
    return 1;
}

void bester_decoder_init(bester_decoder *d, size_t max) {
    memset(d, 0, sizeof *d);
    d->max = max;
}

int bester_decoder_feed(bester_decoder *d, const void *data, size_t n) {
    if (d->failed) return -1;
    if (d->start && d->len + n > d->cap) { /* compact before growing */
        memmove(d->buf, d->buf + d->start, d->len - d->start);
        d->len -= d->start;
        d->start = 0;
    }
    if (n > SIZE_MAX / 2 - d->len) return -1;
    if (d->len + n > d->cap) {
        size_t cap = d->cap ? d->cap : 4096;
        while (cap < d->len + n) cap *= 2;
        unsigned char *nb = realloc(d->buf, cap);
        if (!nb) return -1;
        d->buf = nb;
        d->cap = cap;
    }
    if (n) memcpy(d->buf + d->len, data, n);
    d->len += n;
    return 0;
}

int bester_decoder_next(bester_decoder *d, char **body, size_t *len) {
    if (d->failed) return -1;
    size_t have = d->len - d->start;
    if (have < 4) return 0;
    const unsigned char *p = d->buf + d->start;
    uint32_t n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    if (n > d->max) {
        d->failed = 1;
        return -1;
    }
    if (have - 4 < n) return 0;
    char *out = malloc((size_t)n + 1);
    if (!out) return -1;
    memcpy(out, p + 4, n);
    out[n] = 0;
    d->start += 4 + (size_t)n;
    if (d->start == d->len) d->start = d->len = 0;
    *body = out;
    *len = n;
    return 1;
}

size_t bester_decoder_pending(const bester_decoder *d) { return d->len - d->start; }

void bester_decoder_free(bester_decoder *d) {
    free(d->buf);
    memset(d, 0, sizeof *d);
}

/* ---- buffers ------------------------------------------------------------------------------ */

void bester_buf_add(bester_buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (n > SIZE_MAX / 4 - b->len) {
        b->failed = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *nd = realloc(b->data, cap);
        if (!nd) {
            b->failed = 1;
            return;
        }
        b->data = nd;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void bester_buf_adds(bester_buf *b, const char *s) { bester_buf_add(b, s, strlen(s)); }

void bester_buf_quote(bester_buf *b, const char *s, size_t n) {
    bester_buf_add(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        bester_buf_add(b, s + run, i - run);
        char esc[8];
        switch (ch) {
        case '"': bester_buf_add(b, "\\\"", 2); break;
        case '\\': bester_buf_add(b, "\\\\", 2); break;
        case '\n': bester_buf_add(b, "\\n", 2); break;
        case '\r': bester_buf_add(b, "\\r", 2); break;
        case '\t': bester_buf_add(b, "\\t", 2); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            bester_buf_add(b, esc, 6);
        }
        run = i + 1;
    }
    bester_buf_add(b, s + run, n - run);
    bester_buf_add(b, "\"", 1);
}

void bester_buf_free(bester_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- JSON --------------------------------------------------------------------------------- */

/* All of a parse (nodes and decoded strings) lives in one arena, freed at once with its root. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

typedef struct {
    const char *s;
    size_t len, pos;
    bester_error *err;
    int failed;
    arena_block *arena;
} parser;

static void pfail(parser *p, const char *code, const char *what) {
    if (p->failed) return;
    p->failed = 1;
    set_error(p->err, code, "%s at byte %zu", what, p->pos);
}

static void *arena_alloc(parser *p, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    arena_block *b = p->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = b ? b->cap * 2 : 4096;
        if (cap < n) cap = n;
        if (cap > (1u << 20) && n <= (1u << 20)) cap = 1u << 20;
        arena_block *nb = malloc(sizeof *nb + cap);
        if (!nb) {
            pfail(p, BESTER_E_NO_MEMORY, "out of memory");
            return NULL;
        }
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        p->arena = b = nb;
    }
    void *out = (char *)b->data + b->used;
    b->used += n;
    return out;
}

static void arena_free(arena_block *b) {
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
}

/* Length of the UTF-8 sequence at s (of at most n bytes), or 0 if it is not valid UTF-8
 * (overlong forms, surrogates and code points over U+10FFFF refused). */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) need = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) need = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) need = 4, cp = c & 0x07;
    else return 0;
    if (n < need) return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return need;
}

static int utf8_valid(const char *s, size_t n, size_t *bad) {
    for (size_t i = 0; i < n;) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = utf8_len((const unsigned char *)s + i, n - i);
        if (!l) {
            *bad = i;
            return 0;
        }
        i += l;
    }
    return 1;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static bester_json *node(parser *p, bester_json_type t) {
    bester_json *v = arena_alloc(p, sizeof *v);
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->type = t;
    v->raw = p->s + p->pos;
    return v;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3f)), o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3f)), o[2] = (char)(0x80 | (cp >> 6 & 0x3f)),
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static int hex4(parser *p, uint32_t *out) {
    if (p->len - p->pos < 4) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + (size_t)i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    p->pos += 4;
    *out = v;
    return 1;
}

/* A string at p->pos (the opening quote), decoded into the arena. The input was checked to be
 * UTF-8 as a whole; a decoded string is never longer than its JSON text, so the space for it is
 * taken once, from the distance to the closing quote. */
static int parse_string(parser *p, char **out, size_t *out_len) {
    p->pos++; /* the quote */
    size_t end = p->pos;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len) {
        pfail(p, "invalid_json", "unterminated string");
        return 0;
    }
    char *o = arena_alloc(p, end - p->pos + 1);
    if (!o) return 0;
    size_t n = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            pfail(p, "invalid_json", "control character in a string");
            return 0;
        }
        if (c != '\\') {
            o[n++] = (char)c;
            p->pos++;
            continue;
        }
        p->pos++;
        char e = p->s[p->pos++];
        uint32_t cp;
        switch (e) {
        case '"': o[n++] = '"'; continue;
        case '\\': o[n++] = '\\'; continue;
        case '/': o[n++] = '/'; continue;
        case 'b': o[n++] = '\b'; continue;
        case 'f': o[n++] = '\f'; continue;
        case 'n': o[n++] = '\n'; continue;
        case 'r': o[n++] = '\r'; continue;
        case 't': o[n++] = '\t'; continue;
        case 'u':
            if (p->pos > end || !hex4(p, &cp) || p->pos > end) {
                pfail(p, "invalid_json", "bad \\u escape");
                return 0;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                uint32_t lo;
                if (end - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    pfail(p, "invalid_json", "lone leading surrogate");
                    return 0;
                }
                p->pos += 2;
                if (!hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    pfail(p, "invalid_json", "bad trailing surrogate");
                    return 0;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                pfail(p, "invalid_json", "lone trailing surrogate");
                return 0;
            }
            n += put_utf8(o + n, cp);
            continue;
        default:
            pfail(p, "invalid_json", "bad escape");
            return 0;
        }
    }
    p->pos = end + 1;
    o[n] = 0;
    *out = o;
    *out_len = n;
    return 1;
}

static int digits(parser *p) {
    size_t start = p->pos;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    return p->pos > start;
}

static int parse_number(parser *p) {
    if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '0') {
        p->pos++;
    } else if (!digits(p)) {
        return 0;
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        if (!digits(p)) return 0;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (!digits(p)) return 0;
    }
    return 1;
}

static int literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return 0;
    p->pos += n;
    return 1;
}

static bester_json *parse_value(parser *p, int depth);

/* On failure the nodes made so far stay in the arena, which the caller frees. */
static bester_json *parse_container(parser *p, int depth, int object) {
    bester_json *v = node(p, object ? BESTER_JSON_OBJECT : BESTER_JSON_ARRAY);
    if (!v) return NULL;
    if (depth > BESTER_MAX_DEPTH) {
        pfail(p, "invalid_message", "JSON nested deeper than 64 levels");
        return NULL;
    }
    char close = object ? '}' : ']';
    p->pos++;
    skip_ws(p);
    bester_json **tail = &v->child;
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        size_t key_len = 0;
        if (object) {
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != '"') {
                pfail(p, "invalid_json", "expected a key");
                return NULL;
            }
            if (!parse_string(p, &key, &key_len)) return NULL;
            for (bester_json *m = v->child; m; m = m->next) {
                if (m->key_len == key_len && memcmp(m->key, key, key_len) == 0) {
                    pfail(p, "invalid_message", "duplicate key");
                    return NULL;
                }
            }
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                pfail(p, "invalid_json", "expected ':'");
                return NULL;
            }
            p->pos++;
        }
        bester_json *item = parse_value(p, depth + 1);
        if (!item) return NULL;
        item->key = key;
        item->key_len = key_len;
        *tail = item;
        tail = &item->next;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return v;
        }
        pfail(p, "invalid_json", object ? "expected ',' or '}'" : "expected ',' or ']'");
        return NULL;
    }
}

static bester_json *parse_value(parser *p, int depth) {
    skip_ws(p);
    if (p->pos >= p->len) {
        pfail(p, "invalid_json", "EOF while parsing a value");
        return NULL;
    }
    char c = p->s[p->pos];
    bester_json *v = NULL;
    if (c == '{' || c == '[') {
        v = parse_container(p, depth, c == '{');
    } else if (c == '"') {
        v = node(p, BESTER_JSON_STRING);
        if (v && !parse_string(p, &v->str, &v->str_len)) v = NULL;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        v = node(p, BESTER_JSON_NUMBER);
        if (v && !parse_number(p)) {
            pfail(p, "invalid_json", "bad number");
            v = NULL;
        }
    } else {
        if (c != 'n' && c != 't' && c != 'f') {
            pfail(p, "invalid_json", "expected value");
            return NULL;
        }
        bester_json_type t = c == 'n' ? BESTER_JSON_NULL : c == 't' ? BESTER_JSON_TRUE : BESTER_JSON_FALSE;
        v = node(p, t);
        if (v && !literal(p, c == 'n' ? "null" : c == 't' ? "true" : "false")) {
            pfail(p, "invalid_json", "expected value");
            v = NULL;
        }
    }
    if (v) v->raw_len = (size_t)(p->s + p->pos - v->raw);
    return v;
}

bester_json *bester_json_parse(const char *text, size_t len, bester_error *err) {
    size_t bad;
    if (!utf8_valid(text, len, &bad)) {
        set_error(err, "invalid_utf8", "frame body is not valid UTF-8 (at byte %zu)", bad);
        return NULL;
    }
    parser p = {text, len, 0, err, 0, NULL};
    /* The root is the arena's first allocation: freeing the root frees the arena. */
    bester_json *v = parse_value(&p, 1);
    skip_ws(&p);
    if (v && p.pos != len) pfail(&p, "invalid_json", "trailing characters");
    if (!v || p.failed) {
        arena_free(p.arena);
        return NULL;
    }
    v->arena_ = p.arena;
    return v;
}

int bester_json_valid(const char *text, size_t len) {
    bester_json *v = bester_json_parse(text, len, NULL);
    bester_json_free(v);
    return v != NULL;
}

void bester_json_free(bester_json *v) {
    if (v) arena_free(v->arena_);
}

const bester_json *bester_json_get(const bester_json *v, const char *key) {
    if (!v || v->type != BESTER_JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (const bester_json *m = v->child; m; m = m->next)
        if (m->key_len == n && memcmp(m->key, key, n) == 0) return m;
    return NULL;
}

const char *bester_json_string(const bester_json *v) {
    return v && v->type == BESTER_JSON_STRING ? v->str : NULL;
}

int bester_json_equal(const bester_json *a, const bester_json *b) {
    if (!a || !b) return a == b;
    if (a->type != b->type) return 0;
    switch (a->type) {
    case BESTER_JSON_NULL:
    case BESTER_JSON_TRUE:
    case BESTER_JSON_FALSE: return 1;
    case BESTER_JSON_NUMBER: return a->raw_len == b->raw_len && memcmp(a->raw, b->raw, a->raw_len) == 0;
    case BESTER_JSON_STRING: return a->str_len == b->str_len && memcmp(a->str, b->str, a->str_len) == 0;
    case BESTER_JSON_ARRAY: {
        const bester_json *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next)
            if (!bester_json_equal(x, y)) return 0;
        return !x && !y;
    }
    case BESTER_JSON_OBJECT: {
        size_t na = 0, nb = 0;
        for (const bester_json *x = a->child; x; x = x->next) na++;
        for (const bester_json *y = b->child; y; y = y->next) nb++;
        if (na != nb) return 0;
        for (const bester_json *x = a->child; x; x = x->next) {
            const bester_json *y = b->child;
            while (y && !(y->key_len == x->key_len && memcmp(y->key, x->key, x->key_len) == 0)) y = y->next;
            if (!y || !bester_json_equal(x, y)) return 0;
        }
        return 1;
    }
    }
    return 0;
}

/* Add data_json (NULL: null) after checking it is one JSON value (unless it is known to be:
 * the request's own data, already parsed). */
static int add_json_trusted(bester_buf *b, const char *data_json, const char *trusted) {
    if (!data_json) {
        bester_buf_adds(b, "null");
        return 0;
    }
    if (data_json != trusted && !bester_json_valid(data_json, strlen(data_json))) return -1;
    bester_buf_adds(b, data_json);
    return 0;
}

static int add_json(bester_buf *b, const char *data_json) { return add_json_trusted(b, data_json, NULL); }

static void add_names(bester_buf *b, const char *const *names, size_t n) {
    bester_buf_add(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i) bester_buf_add(b, ",", 1);
        bester_buf_quote(b, names[i], strlen(names[i]));
    }
    bester_buf_add(b, "]", 1);
}

/* ---- client ------------------------------------------------------------------------------- */

typedef struct pending_frame {
    bester_message m;
    struct pending_frame *next;
} pending_frame;

struct bester_client {
    int fd;
    bester_decoder in; /* bytes read but not yet taken as frames */
    int timeout_ms;
    unsigned long next_id;
    char *user, *resume;
    pending_frame *replies; /* replies received while waiting for another id, newest first */
    size_t nreplies;
    pending_frame *pushes, **pushes_tail;
    size_t npushes;
    bester_buf out;    /* frames sent but not yet written */
    /* Stored pushes' ids handed over (a ring, oldest overwritten) and the acks owed. */
    unsigned long long seen[BESTER_MAX_SEEN];
    unsigned char seen_acked[BESTER_MAX_SEEN];
    size_t nseen, seen_next;
    unsigned long long owed[BESTER_MAX_SEEN];
    size_t nowed;
    int manual_ack;
    bester_error ack_error; /* a refused automatic ack, for the next bester_next_push */
    int ack_failed;
    char chunk[65536]; /* what one read takes */
};

#define MAX_KEPT 1024 /* pushes (and stray replies) kept before the oldest are dropped */

void bester_message_free(bester_message *m) {
    if (!m) return;
    bester_json_free(m->json);
    free(m->frame);
    memset(m, 0, sizeof *m);
}

bester_client *bester_connect(const char *host, const char *port, int timeout_ms, bester_error *err) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        set_error(err, BESTER_E_CONNECTION_LOST, "cannot resolve %s: %s", host, gai_strerror(rc));
        return NULL;
    }
    int fd = -1, last = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        last = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        set_error(err, BESTER_E_CONNECTION_LOST, "cannot connect to %s:%s: %s", host, port, strerror(last));
        return NULL;
    }
    bester_client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        set_error(err, BESTER_E_NO_MEMORY, "out of memory");
        return NULL;
    }
    c->fd = fd;
    c->timeout_ms = timeout_ms;
    bester_decoder_init(&c->in, BESTER_CLIENT_MAX_FRAME);
    c->pushes_tail = &c->pushes;
    return c;
}

static void free_list(pending_frame *p) {
    while (p) {
        pending_frame *n = p->next;
        bester_message_free(&p->m);
        free(p);
        p = n;
    }
}

void bester_close(bester_client *c) {
    if (!c) return;
    bester_flush(c, NULL);
    close(c->fd);
    bester_decoder_free(&c->in);
    bester_buf_free(&c->out);
    free_list(c->replies);
    free_list(c->pushes);
    free(c->user);
    free(c->resume);
    free(c);
}

void bester_kept(const bester_client *c, size_t *replies, size_t *pushes) {
    *replies = c->nreplies;
    *pushes = c->npushes;
}

const char *bester_user(const bester_client *c) { return c->user; }
const char *bester_resume(const bester_client *c) { return c->resume; }

/* Wait up to ms (<0: forever) for the socket to be readable: 1, 0 on timeout, -1. */
static int wait_readable(int fd, int ms) {
    struct pollfd pfd = {fd, POLLIN, 0};
    for (;;) {
        int r = poll(&pfd, 1, ms);
        if (r < 0 && errno == EINTR) continue;
        return r;
    }
}

int bester_flush(bester_client *c, bester_error *err) {
    if (!c->out.len) return 0;
    int r = write_all(c->fd, c->out.data, c->out.len);
    c->out.len = 0;
    if (r < 0) set_error(err, BESTER_E_CONNECTION_LOST, "%s", strerror(errno));
    return r;
}

/* The next frame from the server, waiting up to ms (<0: forever) for it: 0, or -1. */
static int next_frame(bester_client *c, char **body, size_t *len, int ms, bester_error *err) {
    for (;;) {
        int r = bester_decoder_next(&c->in, body, len);
        if (r == 1) return 0;
        if (r < 0) {
            set_error(err, c->in.failed ? "frame_too_large" : BESTER_E_NO_MEMORY, "%s",
                      c->in.failed ? "the server sent a frame over the client's limit" : "out of memory");
            return -1;
        }
        if (bester_flush(c, err) < 0) return -1;
        int w = wait_readable(c->fd, ms);
        if (w == 0) {
            set_error(err, BESTER_E_TIMEOUT, "no frame within %d ms", ms);
            return -1;
        }
        ssize_t n = w < 0 ? -1 : read(c->fd, c->chunk, sizeof c->chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            set_error(err, BESTER_E_CONNECTION_LOST, "%s",
                      n == 0 ? "the server closed the connection" : strerror(errno));
            return -1;
        }
        if (bester_decoder_feed(&c->in, c->chunk, (size_t)n) < 0) {
            set_error(err, BESTER_E_NO_MEMORY, "out of memory");
            return -1;
        }
    }
}

/* Read and parse one frame from the server into m. */
static int read_message(bester_client *c, bester_message *m, int ms, bester_error *err) {
    memset(m, 0, sizeof *m);
    size_t len;
    if (next_frame(c, &m->frame, &len, ms, err) < 0) return -1;
    m->json = bester_json_parse(m->frame, len, err);
    const bester_json *h = bester_json_get(m->json, "header");
    if (!h) {
        if (m->json) set_error(err, BESTER_E_PROTOCOL, "a frame without a header");
        bester_message_free(m);
        return -1;
    }
    m->kind = bester_json_string(bester_json_get(h, "kind"));
    m->id = bester_json_string(bester_json_get(h, "id"));
    m->type = bester_json_string(bester_json_get(h, "type"));
    m->status = bester_json_string(bester_json_get(h, "status"));
    m->from_user = bester_json_string(bester_json_get(bester_json_get(h, "from"), "user"));
    m->msg = bester_json_string(bester_json_get(h, "msg"));
    const bester_json *stored = bester_json_get(h, "stored");
    m->stored = stored && stored->type == BESTER_JSON_TRUE;
    const bester_json *d = bester_json_get(m->json, "data");
    if (d) {
        m->data = d->raw;
        m->data_len = d->raw_len;
    } else {
        m->data = "null";
        m->data_len = 4;
    }
    if (!m->status || !m->kind) {
        set_error(err, BESTER_E_PROTOCOL, "a frame without status or kind");
        bester_message_free(m);
        return -1;
    }
    return 0;
}

/* The error of an error frame, into err. */
static void error_of(const bester_message *m, bester_error *err) {
    const bester_json *d = bester_json_get(m->json, "data");
    const char *code = bester_json_string(bester_json_get(d, "code"));
    const char *text = bester_json_string(bester_json_get(d, "error"));
    set_error(err, code ? code : BESTER_E_PROTOCOL, "%s", text ? text : "an error frame without error data");
}

static int keep(pending_frame **head, pending_frame ***tail, size_t *count, bester_message *m) {
    pending_frame *p = malloc(sizeof *p);
    if (!p) {
        bester_message_free(m);
        return -1;
    }
    p->m = *m;
    p->next = NULL;
    if (tail) {
        **tail = p;
        *tail = &p->next;
    } else {
        p->next = *head;
        *head = p;
    }
    if (count && ++*count > MAX_KEPT) { /* drop the oldest push */
        pending_frame *old = *head;
        *head = old->next;
        if (!*head) *tail = head;
        bester_message_free(&old->m);
        free(old);
        --*count;
    }
    return 0;
}

/* Keep a reply for a later bester_recv; past MAX_KEPT (replies nobody waits for: ids given
 * up on, or a server answering ids it was never sent) the oldest is dropped. */
static void keep_reply(bester_client *c, bester_message *m) {
    if (keep(&c->replies, NULL, NULL, m) < 0 || ++c->nreplies <= MAX_KEPT) return;
    pending_frame **p = &c->replies;
    while ((*p)->next) p = &(*p)->next;
    bester_message_free(&(*p)->m);
    free(*p);
    *p = NULL;
    c->nreplies--;
}

static int login(bester_client *c, bester_buf *ident, bester_error *err) {
    if (ident->failed) {
        set_error(err, BESTER_E_NO_MEMORY, "out of memory");
        return -1;
    }
    if (bester_flush(c, err) < 0) return -1;
    if (bester_write_frame(c->fd, ident->data, ident->len) < 0) {
        set_error(err, BESTER_E_CONNECTION_LOST, "%s", strerror(errno));
        return -1;
    }
    bester_message m;
    if (read_message(c, &m, c->timeout_ms ? c->timeout_ms : -1, err) < 0) return -1;
    if (strcmp(m.status, "ok") != 0 || strcmp(m.kind, "reply") != 0) {
        if (strcmp(m.status, "ok") == 0)
            set_error(err, BESTER_E_PROTOCOL, "unexpected \"%s\" frame at login (this library logs in by password or token)", m.kind);
        else
            error_of(&m, err);
        bester_message_free(&m);
        return -1;
    }
    const bester_json *d = bester_json_get(m.json, "data");
    const char *user = bester_json_string(bester_json_get(d, "user"));
    const char *resume = bester_json_string(bester_json_get(d, "resume"));
    free(c->user);
    free(c->resume);
    c->user = user ? strdup(user) : NULL;
    c->resume = resume ? strdup(resume) : NULL;
    bester_message_free(&m);
    return 0;
}

int bester_login_password(bester_client *c, const char *user, const char *password, bester_error *err) {
    bester_buf b = {0};
    bester_buf_adds(&b, "{\"header\":{\"identify\":{\"type\":\"client\",\"authentication\":{\"username\":");
    bester_buf_quote(&b, user, strlen(user));
    bester_buf_adds(&b, ",\"password\":");
    bester_buf_quote(&b, password, strlen(password));
    bester_buf_adds(&b, "}}}}");
    int r = login(c, &b, err);
    if (b.data) memset(b.data, 0, b.len); /* the password */
    bester_buf_free(&b);
    return r;
}

int bester_login_token(bester_client *c, const char *token, bester_error *err) {
    bester_buf b = {0};
    bester_buf_adds(&b, "{\"header\":{\"identify\":{\"type\":\"client\",\"authentication\":{\"token\":");
    bester_buf_quote(&b, token, strlen(token));
    bester_buf_adds(&b, "}}}}");
    int r = login(c, &b, err);
    bester_buf_free(&b);
    return r;
}

int bester_login(bester_client *c, const char *authentication_json, bester_error *err) {
    bester_json *a = bester_json_parse(authentication_json, strlen(authentication_json), NULL);
    int object = a && a->type == BESTER_JSON_OBJECT;
    bester_json_free(a);
    if (!object) {
        set_error(err, "invalid_json", "the authentication is not a JSON object");
        return -1;
    }
    bester_buf b = {0};
    bester_buf_adds(&b, "{\"header\":{\"identify\":{\"type\":\"client\",\"authentication\":");
    bester_buf_adds(&b, authentication_json);
    bester_buf_adds(&b, "}}}");
    int r = login(c, &b, err);
    if (b.data) memset(b.data, 0, b.len);
    bester_buf_free(&b);
    return r;
}

/* ---- stored pushes: handed over once, acknowledged ---------------------------------------- */

/* A durable id (a decimal u64), or 0 for none or one that is not. */
static unsigned long long msg_id(const char *msg) {
    if (!msg || !*msg) return 0;
    unsigned long long v = 0;
    for (const char *p = msg; *p; p++) {
        if (*p < '0' || *p > '9' || v > (~0ULL - 9) / 10) return 0;
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    return v;
}

static long seen_find(const bester_client *c, unsigned long long id) {
    for (size_t i = 0; i < c->nseen; i++)
        if (c->seen[i] == id) return (long)i;
    return -1;
}

static void owe(bester_client *c, unsigned long long id) {
    if (id && c->nowed < BESTER_MAX_SEEN) c->owed[c->nowed++] = id; /* else it comes again */
}

/* What to do with a push: 1 hand it over, 0 skip it (a copy; acknowledged again if it was). */
static int arrived(bester_client *c, const bester_message *m) {
    unsigned long long id = msg_id(m->msg);
    if (!id) return 1;
    long at = seen_find(c, id);
    if (at >= 0) {
        if (c->seen_acked[at]) owe(c, id);
        return 0;
    }
    c->seen[c->seen_next] = id;
    c->seen_acked[c->seen_next] = 0;
    c->seen_next = (c->seen_next + 1) % BESTER_MAX_SEEN;
    if (c->nseen < BESTER_MAX_SEEN) c->nseen++;
    return 1;
}

static void mark_acked(bester_client *c, unsigned long long id) {
    long at = seen_find(c, id);
    if (at >= 0) c->seen_acked[at] = 1;
}

static void queue_frame(bester_client *c, const bester_buf *b) {
    unsigned char h[4] = {(unsigned char)b->len, (unsigned char)(b->len >> 8), (unsigned char)(b->len >> 16),
                          (unsigned char)(b->len >> 24)};
    bester_buf_add(&c->out, (const char *)h, 4);
    bester_buf_add(&c->out, b->data, b->len);
}

/* Queue one bester.ack (id "ack-N": its reply is read here, never kept) for the acks owed. */
static void queue_acks(bester_client *c) {
    if (!c->nowed) return;
    bester_buf b = {0};
    char num[32];
    snprintf(num, sizeof num, "%lu", ++c->next_id);
    bester_buf_adds(&b, "{\"header\":{\"scope\":\"client\",\"id\":\"ack-");
    bester_buf_adds(&b, num);
    bester_buf_adds(&b, "\"},\"payload\":{\"type\":\"bester.ack\",\"data\":{\"msgs\":[");
    for (size_t i = 0; i < c->nowed; i++) {
        snprintf(num, sizeof num, "%s\"%llu\"", i ? "," : "", c->owed[i]);
        bester_buf_adds(&b, num);
        mark_acked(c, c->owed[i]);
    }
    bester_buf_adds(&b, "]}}}");
    c->nowed = 0;
    if (!b.failed) queue_frame(c, &b);
    bester_buf_free(&b);
}

/* The reply to an automatic ack: taken (a refusal kept for bester_next_push). 1 if it was one. */
static int ack_reply(bester_client *c, bester_message *m) {
    if (!m->id || strncmp(m->id, "ack-", 4) != 0) return 0;
    if (strcmp(m->status, "ok") != 0 && !c->ack_failed) {
        error_of(m, &c->ack_error);
        c->ack_failed = 1;
    }
    bester_message_free(m);
    return 1;
}

void bester_set_auto_ack(bester_client *c, int auto_ack) { c->manual_ack = !auto_ack; }

int bester_ack(bester_client *c, const char *const *msgs, size_t n, long *acked, bester_error *err) {
    if (acked) *acked = 0;
    bester_buf b = {0};
    bester_buf_adds(&b, "{\"msgs\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) bester_buf_add(&b, ",", 1);
        bester_buf_quote(&b, msgs[i], strlen(msgs[i]));
        mark_acked(c, msg_id(msgs[i]));
    }
    bester_buf_adds(&b, "]}");
    bester_buf_add(&b, "", 1); /* NUL */
    if (b.failed) {
        bester_buf_free(&b);
        set_error(err, BESTER_E_NO_MEMORY, "out of memory");
        return -1;
    }
    bester_message m;
    int r = bester_request(c, "bester.ack", b.data, &m, err);
    bester_buf_free(&b);
    const bester_json *count = bester_json_get(bester_json_get(m.json, "data"), "acked");
    if (r == 0 && acked && count && count->type == BESTER_JSON_NUMBER) *acked = strtol(count->raw, NULL, 10);
    bester_message_free(&m);
    return r;
}

void bester_move_seen(bester_client *to, bester_client *from) {
    memcpy(to->seen, from->seen, sizeof to->seen);
    memcpy(to->seen_acked, from->seen_acked, sizeof to->seen_acked);
    to->nseen = from->nseen;
    to->seen_next = from->seen_next;
    memcpy(to->owed, from->owed, from->nowed * sizeof from->owed[0]);
    to->nowed = from->nowed;
    from->nseen = from->seen_next = from->nowed = 0;
}

int bester_send(bester_client *c, const char *type, const char *data_json, char *id_out, bester_error *err) {
    char id[24];
    queue_acks(c); /* the acks owed go first */
    snprintf(id, sizeof id, "%lu", ++c->next_id);
    bester_buf b = {0};
    bester_buf_adds(&b, "{\"header\":{\"scope\":\"client\",\"id\":\"");
    bester_buf_adds(&b, id);
    bester_buf_adds(&b, "\"},\"payload\":{\"type\":");
    bester_buf_quote(&b, type, strlen(type));
    bester_buf_adds(&b, ",\"data\":");
    if (add_json(&b, data_json) < 0) {
        bester_buf_free(&b);
        set_error(err, "invalid_json", "data is not JSON");
        return -1;
    }
    bester_buf_adds(&b, "}}");
    int r = 0;
    if (b.failed) {
        set_error(err, BESTER_E_NO_MEMORY, "out of memory");
        r = -1;
    } else if (b.len > BESTER_MAX_FRAME) {
        set_error(err, "frame_too_large", "frame of %zu bytes is over the limit of %u bytes", b.len, BESTER_MAX_FRAME);
        r = -1;
    } else {
        /* Queued: written with the next frames, before the client waits for anything (or at
         * 64 KiB), so pipelined requests share a write. */
        queue_frame(c, &b);
        if (c->out.failed) {
            c->out.failed = 0;
            c->out.len = 0;
            set_error(err, BESTER_E_NO_MEMORY, "out of memory");
            r = -1;
        } else if (c->out.len >= 65536) {
            r = bester_flush(c, err);
        }
    }
    bester_buf_free(&b);
    if (r == 0 && id_out) memcpy(id_out, id, strlen(id) + 1);
    return r;
}

int bester_recv(bester_client *c, const char *id, bester_message *reply, bester_error *err) {
    for (pending_frame **p = &c->replies; *p; p = &(*p)->next) {
        if ((*p)->m.id && strcmp((*p)->m.id, id) == 0) {
            pending_frame *f = *p;
            *p = f->next;
            *reply = f->m;
            free(f);
            c->nreplies--;
            goto got;
        }
    }
    for (;;) {
        bester_message m;
        if (read_message(c, &m, c->timeout_ms ? c->timeout_ms : -1, err) < 0) return -1;
        if (strcmp(m.kind, "push") == 0) {
            keep(&c->pushes, &c->pushes_tail, &c->npushes, &m);
            continue;
        }
        if (m.id && strcmp(m.id, id) == 0) {
            *reply = m;
            break;
        }
        if (ack_reply(c, &m)) continue;
        if (!m.id && strcmp(m.status, "error") == 0) { /* kicked, session_revoked, …: closing */
            error_of(&m, err);
            bester_message_free(&m);
            return -1;
        }
        if (m.id) keep_reply(c, &m);
        else bester_message_free(&m);
    }
got:
    if (strcmp(reply->status, "ok") != 0) {
        error_of(reply, err);
        return -1;
    }
    return 0;
}

int bester_request(bester_client *c, const char *type, const char *data_json, bester_message *reply,
                   bester_error *err) {
    char id[24];
    memset(reply, 0, sizeof *reply);
    if (bester_send(c, type, data_json, id, err) < 0) return -1;
    return bester_recv(c, id, reply, err);
}

int bester_next_push(bester_client *c, bester_message *push, int timeout_ms, bester_error *err) {
    for (;;) {
        if (c->ack_failed) {
            c->ack_failed = 0;
            if (err) *err = c->ack_error;
            return -1;
        }
        if (c->pushes) {
            pending_frame *f = c->pushes;
            c->pushes = f->next;
            if (!c->pushes) c->pushes_tail = &c->pushes;
            c->npushes--;
            if (!arrived(c, &f->m)) { /* a copy of one handed over */
                bester_message_free(&f->m);
                free(f);
                continue;
            }
            if (!c->manual_ack) owe(c, msg_id(f->m.msg));
            *push = f->m;
            free(f);
            return 1;
        }
        if (bester_decoder_pending(&c->in) < 4) queue_acks(c); /* about to wait: one ack for the batch */
        if (bester_flush(c, err) < 0) return -1;
        if (bester_decoder_pending(&c->in) < 4 && wait_readable(c->fd, timeout_ms) == 0) return 0;
        bester_message m;
        bester_error e;
        if (read_message(c, &m, timeout_ms, &e) < 0) {
            if (strcmp(e.code, BESTER_E_TIMEOUT) == 0) return 0;
            if (err) *err = e;
            return -1;
        }
        if (strcmp(m.kind, "push") == 0) keep(&c->pushes, &c->pushes_tail, &c->npushes, &m);
        else if (ack_reply(c, &m)) continue;
        else if (m.id) keep_reply(c, &m);
        else {
            error_of(&m, err);
            bester_message_free(&m);
            return -1;
        }
    }
}

/* ---- handler ------------------------------------------------------------------------------ */

struct bester_answer {
    const bester_req *req;
    bester_buf out;
    int bad;
};

static void answer_head(bester_answer *a, const char *status, const char *command) {
    bester_buf *b = &a->out;
    bester_buf_adds(b, "{\"header\":{\"status\":\"");
    bester_buf_adds(b, status);
    bester_buf_adds(b, "\",\"command\":\"");
    bester_buf_adds(b, command);
    bester_buf_adds(b, "\"");
}

/* Close the header (with the request token), add the payload, and frame it. */
static int answer_tail(bester_answer *a, size_t start, const char *type, const char *data_json, int with_token) {
    bester_buf *b = &a->out;
    if (with_token) {
        bester_buf_adds(b, ",\"request\":");
        bester_buf_quote(b, a->req->token, strlen(a->req->token));
    }
    bester_buf_adds(b, "},\"payload\":{\"type\":");
    bester_buf_quote(b, type, strlen(type));
    bester_buf_adds(b, ",\"data\":");
    if (add_json_trusted(b, data_json, a->req->data) < 0) {
        b->len = start; /* drop this frame */
        a->bad = 1;
        return -1;
    }
    bester_buf_adds(b, "}}");
    return 0;
}

/* Each frame is built after a 4-byte hole for its length, filled in by frame_done. */
static size_t frame_start(bester_answer *a) {
    size_t start = a->out.len;
    bester_buf_add(&a->out, "\0\0\0\0", 4);
    return start;
}

static int frame_done(bester_answer *a, size_t start, int rc) {
    if (rc < 0 || a->out.failed) {
        if (!a->out.failed) a->out.len = start;
        a->bad = 1;
        return -1;
    }
    size_t n = a->out.len - start - 4;
    if (n > BESTER_MAX_FRAME) {
        a->out.len = start;
        a->bad = 1;
        return -1;
    }
    unsigned char *h = (unsigned char *)a->out.data + start;
    h[0] = (unsigned char)n, h[1] = (unsigned char)(n >> 8), h[2] = (unsigned char)(n >> 16), h[3] = (unsigned char)(n >> 24);
    return 0;
}

static int answer(bester_answer *a, const char *status, const char *command, const char *command_data_json,
                  const char *type, const char *data_json) {
    size_t start = frame_start(a);
    answer_head(a, status, command);
    if (command_data_json) {
        bester_buf_adds(&a->out, ",\"commandData\":");
        bester_buf_adds(&a->out, command_data_json);
    }
    return frame_done(a, start, answer_tail(a, start, type, data_json, 1));
}

int bester_reply(bester_answer *a, const char *data_json) {
    return answer(a, "ok", "reply", NULL, a->req->type, data_json);
}

int bester_reply_type(bester_answer *a, const char *type, const char *data_json) {
    return answer(a, "ok", "reply", NULL, type, data_json);
}

int bester_reply_error(bester_answer *a, const char *code, const char *text) {
    bester_buf d = {0};
    bester_buf_adds(&d, "{\"error\":");
    bester_buf_quote(&d, text, strlen(text));
    bester_buf_adds(&d, ",\"code\":");
    bester_buf_quote(&d, code, strlen(code));
    bester_buf_adds(&d, "}");
    int r = d.failed ? -1 : answer(a, "error", "reply", NULL, a->req->type, d.data);
    bester_buf_free(&d);
    return r;
}

static int with_names(bester_answer *a, const char *command, const char *const *names, size_t n, const char *type,
                      const char *data_json) {
    bester_buf cd = {0};
    add_names(&cd, names, n);
    int r = cd.failed ? -1 : answer(a, "ok", command, cd.data, type, data_json);
    bester_buf_free(&cd);
    return r;
}

int bester_send_clients(bester_answer *a, const char *const *users, size_t n, const char *data_json) {
    return with_names(a, "sendClients", users, n, a->req->type, data_json);
}

int bester_send_servers(bester_answer *a, const char *const *servers, size_t n, const char *data_json) {
    return with_names(a, "sendServers", servers, n, a->req->type, data_json);
}

int bester_send_handler(bester_answer *a, const char *type, const char *data_json) {
    bester_buf cd = {0};
    bester_buf_quote(&cd, type, strlen(type));
    int r = cd.failed ? -1 : answer(a, "ok", "sendHandler", cd.data, type, data_json);
    bester_buf_free(&cd);
    return r;
}

int bester_login_ok(bester_answer *a, const char *user, const char *info_json) {
    bester_buf d = {0};
    bester_buf_adds(&d, "{\"user\":");
    bester_buf_quote(&d, user, strlen(user));
    if (info_json) {
        bester_json *info = bester_json_parse(info_json, strlen(info_json), NULL);
        int object = info && info->type == BESTER_JSON_OBJECT;
        bester_json_free(info);
        if (!object) {
            bester_buf_free(&d);
            a->bad = 1;
            return -1;
        }
        bester_buf_adds(&d, ",\"info\":");
        bester_buf_adds(&d, info_json);
    }
    bester_buf_adds(&d, "}");
    int r = d.failed ? -1 : bester_reply(a, d.data);
    bester_buf_free(&d);
    return r;
}

static int push(bester_answer *a, const char *command, const char *const *names, size_t n, const char *type,
                const char *data_json, const char *id) {
    size_t start = frame_start(a);
    answer_head(a, "ok", command);
    bester_buf_adds(&a->out, ",\"commandData\":");
    add_names(&a->out, names, n);
    if (id) {
        bester_buf_adds(&a->out, ",\"id\":");
        bester_buf_quote(&a->out, id, strlen(id));
    }
    return frame_done(a, start, answer_tail(a, start, type, data_json, 0));
}

int bester_push_clients(bester_answer *a, const char *const *users, size_t n, const char *type,
                        const char *data_json, const char *id) {
    return push(a, "sendClients", users, n, type, data_json, id);
}

int bester_push_servers(bester_answer *a, const char *const *servers, size_t n, const char *type,
                        const char *data_json, const char *id) {
    return push(a, "sendServers", servers, n, type, data_json, id);
}

int bester_handler_connect(const char *path) {
    if (!path) path = getenv("BESTER_SOCKET");
    if (!path) {
        errno = EINVAL;
        return -1;
    }
    struct sockaddr_un sa = {0};
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Serve one frame: the bytes to write back go to out. */
static void serve_one(const char *body, size_t len, bester_handler_fn fn, void *userdata, bester_buf *out, int *logged) {
    bester_error err;
    bester_json *j = bester_json_parse(body, len, &err);
    const bester_json *h = bester_json_get(j, "header");
    const char *kind = bester_json_string(bester_json_get(h, "kind"));
    const char *token = bester_json_string(bester_json_get(h, "request"));
    const bester_json *payload = bester_json_get(j, "payload");
    const char *type = bester_json_string(bester_json_get(payload, "type"));
    if (!kind || !token || !type || (strcmp(kind, "request") != 0 && strcmp(kind, "login") != 0)) {
        /* Reports (and anything else that is not a request) are never answered; error reports
         * and strange frames are logged. */
        const char *status = bester_json_string(bester_json_get(h, "status"));
        int ok_report = kind && strcmp(kind, "report") == 0 && status && strcmp(status, "ok") == 0;
        if (!ok_report && ++*logged <= 8) /* a few per connection, not a flood */
            fprintf(stderr, "bester: not answering: %.200s%s\n", body, *logged == 8 ? " (no more of these logged)" : "");
        bester_json_free(j);
        return;
    }
    const bester_json *data = bester_json_get(payload, "data");
    char *data_text = data ? strndup(data->raw, data->raw_len) : strdup("null");
    if (!data_text) {
        bester_json_free(j);
        out->failed = 1;
        return;
    }
    bester_req req = {kind, token, type, data_text, data ? data->raw_len : 4,
                          bester_json_string(bester_json_get(h, "scope")),
                          bester_json_string(bester_json_get(bester_json_get(h, "from"), "user")), j};
    bester_answer a = {&req, {0}, 0};
    int rc = fn(&req, &a, userdata);
    if (rc != 0 || a.bad || a.out.failed) {
        bester_buf_free(&a.out);
        a.bad = 0;
        char text[160];
        snprintf(text, sizeof text, "the %s handler failed", type);
        bester_reply_error(&a, "internal_error", text);
    }
    bester_buf_add(out, a.out.data ? a.out.data : "", a.out.len);
    bester_buf_free(&a.out);
    free(data_text);
    bester_json_free(j);
}

int bester_serve(int fd, bester_handler_fn fn, void *userdata) {
    bester_decoder d;
    bester_decoder_init(&d, BESTER_MAX_FRAME);
    char chunk[65536];
    int result = 0, logged = 0;
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == ECONNRESET) r = 0;
        if (r < 0) {
            result = -1;
            break;
        }
        if (r == 0) {
            if (bester_decoder_pending(&d)) fprintf(stderr, "bester: the socket closed in the middle of a frame\n");
            break;
        }
        if (bester_decoder_feed(&d, chunk, (size_t)r) < 0) {
            result = -1;
            break;
        }
        bester_buf out = {0};
        char *body;
        size_t len;
        int n;
        while ((n = bester_decoder_next(&d, &body, &len)) == 1) {
            serve_one(body, len, fn, userdata, &out, &logged);
            free(body);
        }
        /* The answers to everything this read completed, in one write. */
        int wrote = out.len ? write_all(fd, out.data, out.len) : 0;
        int failed = out.failed;
        bester_buf_free(&out);
        if (n < 0) {
            fprintf(stderr, "bester: a frame over %u bytes: closing\n", BESTER_MAX_FRAME);
            result = -1;
            break;
        }
        if (wrote < 0) {
            if (errno == EPIPE || errno == ECONNRESET) break; /* besterd left */
            result = -1;
            break;
        }
        if (failed) {
            result = -1;
            break;
        }
    }
    bester_decoder_free(&d);
    return result;
}
