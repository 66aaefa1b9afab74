/* bester.h: a C library for besterd clients and handlers (libc only).
 *
 * Frames are a 4-byte little-endian length and that many bytes of UTF-8 JSON (one object);
 * see protocol/PROTOCOL.md. The library has four parts:
 *   - frames: bester_read_frame / bester_write_frame on a file descriptor, and an incremental
 *     decoder for bytes that arrive in any split;
 *   - a small strict JSON parser (UTF-8 checked, duplicate keys and nesting over 64 refused)
 *     that keeps each value's raw text, so data is passed on untouched;
 *   - a blocking client: connect to host:port, log in by password or token, request/reply
 *     matched by id (pipelining with bester_send / bester_recv), pushes kept aside;
 *   - a handler loop: bester_serve(fd, callback, userdata) calls the callback per request and
 *     writes the answer it built; reports are never answered; returns 0 at EOF.
 *
 * Every function that can fail returns -1 and fills a bester_error when given one: `code` is
 * the server's error code (PROTOCOL.md section 8) or one of the library's own
 * (BESTER_E_CONNECTION_LOST, BESTER_E_PROTOCOL, BESTER_E_TIMEOUT, BESTER_E_NO_MEMORY).
 * Nothing is thread-safe: use one client or handler per thread.
 */
#ifndef BESTER_H
#define BESTER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest frame body besterd takes (1 MiB); a client reads up to this plus 64 KiB. */
#define BESTER_MAX_FRAME (1u << 20)
#define BESTER_CLIENT_MAX_FRAME (BESTER_MAX_FRAME + (64u << 10))
/* JSON nesting deeper than this is refused, as besterd does. */
#define BESTER_MAX_DEPTH 64

/* The library's own error codes (never sent by the server). */
#define BESTER_E_CONNECTION_LOST "connection_lost"
#define BESTER_E_PROTOCOL "protocol_error"
#define BESTER_E_TIMEOUT "timeout"
#define BESTER_E_NO_MEMORY "no_memory"

typedef struct bester_error {
    char code[64];  /* e.g. "auth_failed", "unknown_type", "connection_lost" */
    char text[512]; /* for people; truncated if longer */
} bester_error;

/* ---- frames ------------------------------------------------------------------------------- */

/* Write one frame (all of it, retrying short writes and EINTR). 0, or -1 with errno
 * (EMSGSIZE when len is over BESTER_MAX_FRAME). */
int bester_write_frame(int fd, const char *body, size_t len);

/* Read one frame body into a malloc'd buffer (NUL-terminated for convenience; *len excludes
 * the NUL). Returns 1 for a frame, 0 at a clean EOF before any byte, -1 with errno: EMSGSIZE
 * for a length over max (checked before anything is allocated or read), EPROTO for EOF inside a
 * frame, or the read's own. */
int bester_read_frame(int fd, char **body, size_t *len, size_t max);

/* Incremental decoder: feed bytes as they come, take whole frames out. */
typedef struct bester_decoder {
    unsigned char *buf;
    size_t start, len, cap, max; /* the bytes not yet taken are buf[start..len) */
    int failed;
} bester_decoder;

void bester_decoder_init(bester_decoder *d, size_t max);
/* Append bytes. 0, or -1 (out of memory). */
int bester_decoder_feed(bester_decoder *d, const void *data, size_t n);
/* 1: a frame (malloc'd, NUL-terminated, caller frees); 0: need more bytes; -1: the declared
 * length is over max (the stream is unusable from then on). */
int bester_decoder_next(bester_decoder *d, char **body, size_t *len);
/* Bytes of an incomplete frame (non-zero at EOF: a truncated frame). */
size_t bester_decoder_pending(const bester_decoder *d);
void bester_decoder_free(bester_decoder *d);

/* ---- JSON --------------------------------------------------------------------------------- */

typedef enum {
    BESTER_JSON_NULL,
    BESTER_JSON_FALSE,
    BESTER_JSON_TRUE,
    BESTER_JSON_NUMBER,
    BESTER_JSON_STRING,
    BESTER_JSON_ARRAY,
    BESTER_JSON_OBJECT
} bester_json_type;

typedef struct bester_json bester_json;
struct bester_json {
    bester_json_type type;
    const char *raw;   /* this value's text in the parsed document */
    size_t raw_len;
    char *str;         /* STRING: the decoded UTF-8 (NUL-terminated; may contain NULs) */
    size_t str_len;
    char *key;         /* a member of an OBJECT: its decoded key */
    size_t key_len;
    bester_json *child; /* ARRAY / OBJECT: the first element or member */
    bester_json *next;  /* the next sibling */
    void *arena_;       /* the root's: where the whole tree was allocated (private) */
};

/* Parse exactly one JSON value (whitespace around it allowed). The tree points into text, which
 * must outlive it; it is allocated in one arena, freed with bester_json_free(root). NULL on error, with err->code "invalid_utf8", "invalid_json",
 * "invalid_message" (duplicate key, nesting over BESTER_MAX_DEPTH) or BESTER_E_NO_MEMORY. */
bester_json *bester_json_parse(const char *text, size_t len, bester_error *err);
void bester_json_free(bester_json *root); /* a root from bester_json_parse (or NULL) */
/* The member `key` of an object (NULL if v is not an object or has none). */
const bester_json *bester_json_get(const bester_json *v, const char *key);
/* The string value of v, or NULL if v is NULL or not a string. */
const char *bester_json_string(const bester_json *v);
/* Whether two values are equal as JSON (objects in any key order; numbers by their text). */
int bester_json_equal(const bester_json *a, const bester_json *b);
/* Whether text is exactly one valid JSON value (as bester_json_parse checks it). */
int bester_json_valid(const char *text, size_t len);

/* A growable byte buffer, and JSON string quoting into it. */
typedef struct bester_buf {
    char *data;
    size_t len, cap;
    int failed; /* an allocation failed: the contents are incomplete */
} bester_buf;
void bester_buf_add(bester_buf *b, const char *s, size_t n);
void bester_buf_adds(bester_buf *b, const char *s);
void bester_buf_quote(bester_buf *b, const char *s, size_t n); /* "…" with escapes */
void bester_buf_free(bester_buf *b);

/* ---- client ------------------------------------------------------------------------------- */

typedef struct bester_client bester_client;

/* A frame from the server: a reply or a push. `type` and `data` point into `frame`'s text
 * (data is the raw JSON of header.type's payload, "null" when absent). */
typedef struct bester_message {
    char *frame;        /* the whole frame body (malloc'd) */
    bester_json *json;  /* its parse */
    const char *kind;   /* "reply" or "push" */
    const char *id;     /* replies: the id (NULL if none) */
    const char *type;   /* ok replies and pushes */
    const char *status; /* "ok" or "error" */
    const char *data;   /* raw JSON text of data (not NUL-terminated: use data_len) */
    size_t data_len;
    const char *from_user; /* pushes: header.from.user (NULL for a handler's push) */
    const char *msg;       /* pushes of a storing type: header.msg, the durable id (else NULL) */
    int stored;            /* pushes: header.stored is true (kept while the user was away) */
} bester_message;
void bester_message_free(bester_message *m);

/* Connect to host:port (TCP). NULL on failure (err filled). timeout_ms bounds every later read
 * (0: none). */
bester_client *bester_connect(const char *host, const char *port, int timeout_ms, bester_error *err);
/* Log in. 0, or -1 with the server's refusal (e.g. auth_failed "invalid username or
 * password"; the server then closes the connection). */
int bester_login_password(bester_client *c, const char *user, const char *password, bester_error *err);
int bester_login_token(bester_client *c, const char *token, bester_error *err);
/* Log in with any authentication object (raw JSON), e.g. {"resume":"v1.…"} or the shape an
 * auth handler decides ({"apiKey":"…"}). */
int bester_login(bester_client *c, const char *authentication_json, bester_error *err);
/* The session's user and resume token after a login (owned by the client). */
const char *bester_user(const bester_client *c);
const char *bester_resume(const bester_client *c);

/* Send a request without waiting; id_out (at least 24 bytes) gets its id. data_json must be
 * valid JSON (NULL: null). 0 or -1. The frame is queued and written with the frames sent after
 * it before the client next waits for a frame (or once 64 KiB are queued, or by bester_flush),
 * so pipelined requests share one write; a write error then shows in what waits. */
int bester_send(bester_client *c, const char *type, const char *data_json, char *id_out, bester_error *err);
/* Wait for the reply with this id (pushes that come first are kept for bester_next_push,
 * replies to other ids for their own bester_recv). 0 with *reply filled (free it), or -1: an
 * error answer (err has its code and text; *reply is filled too) or a failure. */
int bester_recv(bester_client *c, const char *id, bester_message *reply, bester_error *err);
/* Write the queued requests now. 0, or -1 (connection_lost). */
int bester_flush(bester_client *c, bester_error *err);
/* bester_send then bester_recv. */
int bester_request(bester_client *c, const char *type, const char *data_json, bester_message *reply,
                   bester_error *err);
/* The next push: 1 with *push filled (free it), 0 if none came within timeout_ms (0: only those
 * already received; -1: wait forever), -1 on failure. */
int bester_next_push(bester_client *c, bester_message *push, int timeout_ms, bester_error *err);
/* How many replies (to ids nobody has asked for yet) and pushes the client keeps; each at most
 * 1024, the oldest dropped first. */
void bester_kept(const bester_client *c, size_t *replies, size_t *pushes);

/* Stored pushes (PROTOCOL.md section 4, "Stored delivery"): a push with `msg` comes again until
 * it is acknowledged. bester_next_push hands each id over once: the client remembers the last
 * BESTER_MAX_SEEN ids handed over and skips a copy that comes again (acknowledging it again if
 * its ack was sent). With auto-ack (the default) a push handed over is acknowledged with one
 * bester.ack for the batch, sent when bester_next_push would wait for the network or with the
 * next request; its reply is read by the client, and a refusal is returned by the next
 * bester_next_push (-1, err filled). */
#define BESTER_MAX_SEEN 4096
/* auto_ack 0: the application calls bester_ack once its work is done. */
void bester_set_auto_ack(bester_client *c, int auto_ack);
/* bester.ack for these ids (at most 4096): 0 with *acked (may be NULL) the number the server
 * deleted, or -1. */
int bester_ack(bester_client *c, const char *const *msgs, size_t n, long *acked, bester_error *err);
/* A client that logs in again after a lost connection: move the ids handed over (and the acks
 * owed) from the old client to the new one, so that copies are not handed over twice. */
void bester_move_seen(bester_client *to, bester_client *from);
void bester_close(bester_client *c);

/* ---- handler ------------------------------------------------------------------------------ */

/* A request from besterd, valid during the callback. data is the raw JSON text of payload.data,
 * NUL-terminated ("null" if absent): pass it to an answer as it is to forward it untouched. */
typedef struct bester_req {
    const char *kind;   /* "request", or "login" for an auth handler */
    const char *token;  /* header.request, echoed in the answer */
    const char *type;   /* payload.type */
    const char *data;   /* raw JSON text of payload.data (data_len bytes, then a NUL) */
    size_t data_len;
    const char *scope;     /* "client" or "server" */
    const char *from_user; /* header.from.user, or NULL */
    const bester_json *frame; /* the whole parsed frame, for anything else */
} bester_req;

/* What the callback builds; frames are written in the order they are added. */
typedef struct bester_answer bester_answer;

/* Called once per request. Add zero or more frames to `answer` and return 0; a non-zero return
 * (or a frame that cannot be built) answers the request internal_error instead. */
typedef int (*bester_handler_fn)(const bester_req *req, bester_answer *answer, void *userdata);

/* Answers. data_json is raw JSON (NULL: null) and must be valid. 0, or -1 if it is not. */
int bester_reply(bester_answer *a, const char *data_json);
int bester_reply_type(bester_answer *a, const char *type, const char *data_json);
int bester_reply_error(bester_answer *a, const char *code, const char *text);
int bester_send_clients(bester_answer *a, const char *const *users, size_t n, const char *data_json);
int bester_send_servers(bester_answer *a, const char *const *servers, size_t n, const char *data_json);
int bester_send_handler(bester_answer *a, const char *type, const char *data_json);
/* Accept a login (auth handlers): user, and info_json a JSON object or NULL. */
int bester_login_ok(bester_answer *a, const char *user, const char *info_json);
/* A push to users (or peer servers) that answers no request; id may be NULL. */
int bester_push_clients(bester_answer *a, const char *const *users, size_t n, const char *type,
                        const char *data_json, const char *id);
int bester_push_servers(bester_answer *a, const char *const *servers, size_t n, const char *type,
                        const char *data_json, const char *id);

/* Connect to path (NULL: $BESTER_SOCKET) as a handler: the fd, or -1 (errno set). */
int bester_handler_connect(const char *path);
/* Serve requests on fd until besterd closes it: 0 at EOF, -1 on a broken stream (a frame over
 * BESTER_MAX_FRAME, bytes that are not frames) or a write error. */
int bester_serve(int fd, bester_handler_fn fn, void *userdata);

#ifdef __cplusplus
}
#endif

#endif
