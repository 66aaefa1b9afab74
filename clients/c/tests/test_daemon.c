/* The client against the real daemon, with the C handlers configured (tests/daemon.sh starts
 * it): logins, request/reply, pipelining, pushes and every refusal's exact code and text.
 * Usage: test_daemon HOST PORT */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static const char *host, *port;

static bester_client *login(const char *user, const char *password) {
    bester_error err;
    bester_client *c = bester_connect(host, port, 20000, &err);
    if (!c || bester_login_password(c, user, password, &err) < 0) {
        fprintf(stderr, "login of %s: %s %s\n", user, err.code, err.text);
        exit(1);
    }
    return c;
}

static int data_is(const bester_message *m, const char *json) {
    return m->data_len == strlen(json) && memcmp(m->data, json, m->data_len) == 0;
}

/* A request that must be refused with exactly this code and text. */
static void refused(bester_client *c, const char *type, const char *data, const char *code, const char *text) {
    bester_message m;
    bester_error err;
    int r = bester_request(c, type, data, &m, &err);
    CHECK(r == -1 && strcmp(err.code, code) == 0 && (!text || strcmp(err.text, text) == 0), "%s %s: got %s %s", type,
          data ? data : "null", r == 0 ? "ok" : err.code, r == 0 ? "" : err.text);
    bester_message_free(&m);
}

/* Everything the server had for c has come: the reply to an empty ack comes after the backlog
 * read (and the acks) before it. */
static void barrier(bester_client *c) {
    bester_message m;
    bester_error err;
    CHECK(bester_request(c, "bester.ack", "{\"msgs\":[]}", &m, &err) == 0 && data_is(&m, "{\"acked\":0}"), "barrier: %s",
          err.text);
    bester_message_free(&m);
}

/* Whether bob's queue on the server is empty: a fresh client is sent nothing. */
static int queue_empty(void) {
    bester_client *fresh = login("bob", "bob-pw");
    bester_set_auto_ack(fresh, 0);
    barrier(fresh);
    size_t replies, pushes;
    bester_kept(fresh, &replies, &pushes);
    bester_close(fresh);
    return pushes == 0;
}

/* Stored pushes (type cmail stores): three for bob while he is away come once, in order, with
 * msg; with manual acks they stay until bester_ack, and a new client given the old one's ids
 * (bester_move_seen) does not hand the copies over again; auto-ack empties the queue. */
static void stored_pushes(void) {
    bester_client *alice = login("alice", "alice-pw");
    bester_message m, p;
    bester_error err;
    char data[64], ids[3][32];
    for (int n = 0; n < 3; n++) {
        snprintf(data, sizeof data, "{\"action\":\"mail\",\"n\":%d}", n);
        CHECK(bester_request(alice, "cmail", data, &m, &err) == 0, "mail: %s", err.text);
        const bester_json *stored = bester_json_get(bester_json_get(m.json, "header"), "stored");
        CHECK(stored && stored->raw_len == 7 && memcmp(stored->raw, "[\"bob\"]", 7) == 0, "stored for bob");
        bester_message_free(&m);
    }
    bester_client *bob = login("bob", "bob-pw");
    bester_set_auto_ack(bob, 0);
    for (int n = 0; n < 3; n++) {
        snprintf(data, sizeof data, "{\"action\":\"mail\",\"n\":%d}", n);
        int r = bester_next_push(bob, &p, 20000, &err);
        CHECK(r == 1 && data_is(&p, data) && p.stored && p.msg, "stored push %d in order: %s", n, r == 1 ? p.data : err.text);
        snprintf(ids[n], sizeof ids[n], "%s", r == 1 && p.msg ? p.msg : "");
        bester_message_free(&p);
    }
    barrier(bob);
    CHECK(!queue_empty(), "manual ack: still on the server");
    /* The application logs in again (the copies come) with the ids it was handed. */
    bester_client *again = login("bob", "bob-pw");
    bester_set_auto_ack(again, 0);
    bester_move_seen(again, bob);
    bester_close(bob);
    barrier(again);
    CHECK(bester_next_push(again, &p, 0, &err) == 0, "a copy handed over twice");
    const char *const acks[] = {ids[0], ids[1], ids[2]};
    long acked = -1;
    CHECK(bester_ack(again, acks, 3, &acked, &err) == 0 && acked == 3, "ack: %ld %s", acked, err.text);
    bester_close(again);
    CHECK(queue_empty(), "acknowledged");
    /* Auto-ack: taken, then acknowledged before the next request. */
    CHECK(bester_request(alice, "cmail", "{\"action\":\"mail\",\"n\":3}", &m, &err) == 0, "mail: %s", err.text);
    bester_message_free(&m);
    bob = login("bob", "bob-pw");
    CHECK(bester_next_push(bob, &p, 20000, &err) == 1 && data_is(&p, "{\"action\":\"mail\",\"n\":3}"), "auto: %s", err.text);
    bester_message_free(&p);
    barrier(bob);
    bester_close(bob);
    CHECK(queue_empty(), "auto-ack");
    bester_close(alice);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    host = argv[1];
    port = argv[2];
    bester_error err;
    bester_message m;

    bester_client *alice = login("alice", "alice-pw");
    CHECK(strcmp(bester_user(alice), "alice") == 0, "user");
    CHECK(bester_resume(alice) && strncmp(bester_resume(alice), "v1.", 3) == 0, "resume token");

    /* Through the C echo example. */
    CHECK(bester_request(alice, "echo", "{\"text\":\"gr\xc3\xbc\xc3\x9f" "e\"}", &m, &err) == 0, "%s", err.text);
    CHECK(data_is(&m, "{\"text\":\"gr\xc3\xbc\xc3\x9f" "e\"}") && strcmp(m.type, "echo") == 0, "%.*s", (int)m.data_len, m.data);
    bester_message_free(&m);

    /* 100 pipelined, the replies taken in reverse order. */
    char ids[100][24];
    for (int i = 0; i < 100; i++) {
        char data[32];
        snprintf(data, sizeof data, "%d", i);
        CHECK(bester_send(alice, i % 2 ? "echo" : "ctest", data, ids[i], &err) == 0, "send %d", i);
    }
    for (int i = 99; i >= 0; i--) {
        char data[32];
        snprintf(data, sizeof data, "%d", i);
        CHECK(bester_recv(alice, ids[i], &m, &err) == 0 && data_is(&m, data), "reply %d: %s", i, err.text);
        bester_message_free(&m);
    }

    /* Refusals, each its code and exact text. */
    refused(alice, "nope", NULL, "unknown_type", "no handler for type \"nope\"");
    refused(alice, "a b", NULL, "invalid_message", "payload.type \"a b\" must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
    refused(alice, "ctest", "{\"action\":\"fail\"}", "not_in_room", "alice is not in room \"r\"");
    refused(alice, "ctest", "{\"action\":\"crash\"}", "internal_error", "the ctest handler failed");
    refused(alice, "ctest", "{not json", "invalid_json", "data is not JSON");
    char *big = malloc(BESTER_MAX_FRAME + 3);
    memset(big, 'x', BESTER_MAX_FRAME + 2);
    big[0] = '"';
    big[BESTER_MAX_FRAME + 1] = '"';
    big[BESTER_MAX_FRAME + 2] = 0;
    refused(alice, "echo", big, "frame_too_large", NULL);
    free(big);
    CHECK(bester_request(alice, "bester.ping", NULL, &m, &err) == 0 && data_is(&m, "\"pong\""), "still logged in");
    bester_message_free(&m);

    /* sendClients, a handler's push, sendHandler. */
    bester_client *bob = login("bob", "bob-pw");
    CHECK(bester_request(alice, "ctest", "{\"action\":\"send\"}", &m, &err) == 0 && data_is(&m, "null"), "send: %s", err.text);
    const bester_json *h = bester_json_get(m.json, "header");
    const bester_json *delivered = bester_json_get(h, "delivered"), *offline = bester_json_get(h, "offline");
    CHECK(delivered && delivered->raw_len == 7 && memcmp(delivered->raw, "[\"bob\"]", 7) == 0 && offline &&
              offline->raw_len == 7 && memcmp(offline->raw, "[\"zed\"]", 7) == 0,
          "delivered/offline");
    bester_message_free(&m);
    bester_message p;
    CHECK(bester_next_push(bob, &p, 20000, &err) == 1 && strcmp(p.type, "ctest") == 0 && p.from_user &&
              strcmp(p.from_user, "alice") == 0 && data_is(&p, "{\"text\":\"hi\"}"),
          "push to bob");
    bester_message_free(&p);
    CHECK(bester_request(alice, "ctest", "{\"action\":\"push\"}", &m, &err) == 0 && data_is(&m, "\"pushed\""), "push");
    bester_message_free(&m);
    CHECK(bester_next_push(bob, &p, 20000, &err) == 1 && strcmp(p.type, "news") == 0 && !p.from_user &&
              data_is(&p, "\"extra\""),
          "handler push");
    bester_message_free(&p);
    CHECK(bester_next_push(bob, &p, 0, &err) == 0, "no more pushes");
    CHECK(bester_request(alice, "ctest", "{\"action\":\"forward\"}", &m, &err) == 0 && data_is(&m, "{\"forwarded\":true}") &&
              strcmp(m.type, "echo") == 0,
          "sendHandler: %s", err.text);
    bester_message_free(&m);
    CHECK(bester_request(bob, "ctest", "{\"action\":\"whoami\"}", &m, &err) == 0 && data_is(&m, "{\"user\":\"bob\"}"), "from.user");
    bester_message_free(&m);
    bester_close(bob);
    bester_close(alice);

    /* Login refusals. */
    bester_client *c = bester_connect(host, port, 20000, &err);
    CHECK(c && bester_login_password(c, "alice", "wrong", &err) == -1 && strcmp(err.code, "auth_failed") == 0 &&
              strcmp(err.text, "invalid username or password") == 0,
          "%s %s", err.code, err.text);
    bester_close(c);
    c = bester_connect(host, port, 20000, &err);
    CHECK(c && bester_login_token(c, "not-a-jwt", &err) == -1 && strcmp(err.code, "token_logins_off") == 0 &&
              strcmp(err.text, "this server takes no token logins ([auth.jwt] is not configured)") == 0,
          "%s %s", err.code, err.text);
    bester_close(c);
    /* The resume token logs in again; the C handler as the auth handler decides API keys. */
    c = bester_connect(host, port, 20000, &err);
    char resume[512];
    bester_client *first = login("bob", "bob-pw");
    snprintf(resume, sizeof resume, "{\"resume\":\"%s\"}", bester_resume(first));
    bester_close(first);
    CHECK(c && bester_login(c, resume, &err) == 0 && strcmp(bester_user(c), "bob") == 0, "resume: %s", err.text);
    bester_close(c);
    c = bester_connect(host, port, 20000, &err);
    CHECK(c && bester_login(c, "{\"apiKey\":\"k-alice\"}", &err) == 0 && strcmp(bester_user(c), "alice") == 0,
          "api key: %s %s", err.code, err.text);
    CHECK(bester_request(c, "ctest", "{\"action\":\"whoami\"}", &m, &err) == 0 &&
              data_is(&m, "{\"user\":\"alice\",\"info\":{\"plan\":\"pro\"}}"),
          "info: %.*s", (int)m.data_len, m.data);
    bester_message_free(&m);
    bester_close(c);
    c = bester_connect(host, port, 20000, &err);
    CHECK(c && bester_login(c, "{\"apiKey\":\"k-nobody\"}", &err) == -1 && strcmp(err.code, "auth_failed") == 0 &&
              strcmp(err.text, "invalid API key") == 0,
          "%s %s", err.code, err.text);
    bester_close(c);
    c = bester_connect("127.0.0.1", "1", 20000, &err);
    CHECK(!c && strcmp(err.code, "connection_lost") == 0, "%s", err.code);

    stored_pushes();

    if (failures) {
        fprintf(stderr, "test_daemon: %d failures\n", failures);
        return 1;
    }
    printf("test_daemon: ok\n");
    return 0;
}
