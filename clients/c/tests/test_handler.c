/* The handler the C tests configure in besterd: data.action says what to do (echo by default). */
#include <string.h>

#include "bester.h"

static int handle(const bester_req *req, bester_answer *a, void *userdata) {
    (void)userdata;
    const bester_json *data = bester_json_get(bester_json_get(req->frame, "payload"), "data");
    if (strcmp(req->kind, "login") == 0) { /* as the auth handler ([auth] handler = "ctest") */
        const char *key = bester_json_string(bester_json_get(data, "apiKey"));
        if (key && strcmp(key, "k-alice") == 0) return bester_login_ok(a, "alice", "{\"plan\":\"pro\"}");
        return bester_reply_error(a, "auth_failed", "invalid API key");
    }
    const char *action = bester_json_string(bester_json_get(data, "action"));
    if (!action) return bester_reply(a, req->data);
    if (strcmp(action, "fail") == 0) return bester_reply_error(a, "not_in_room", "alice is not in room \"r\"");
    if (strcmp(action, "crash") == 0) return -1; /* the callback fails: internal_error */
    if (strcmp(action, "send") == 0) {
        const char *to[] = {"bob", "zed"};
        return bester_send_clients(a, to, 2, "{\"text\":\"hi\"}");
    }
    if (strcmp(action, "mail") == 0) { /* the data, to bob (the type cmail stores) */
        const char *to[] = {"bob"};
        return bester_send_clients(a, to, 1, req->data);
    }
    if (strcmp(action, "push") == 0) {
        const char *to[] = {"bob"};
        return bester_reply(a, "\"pushed\"") || bester_push_clients(a, to, 1, "news", "\"extra\"", "p1");
    }
    if (strcmp(action, "forward") == 0) return bester_send_handler(a, "echo", "{\"forwarded\":true}");
    if (strcmp(action, "whoami") == 0) {
        bester_buf b = {0};
        bester_buf_adds(&b, "{\"user\":");
        bester_buf_quote(&b, req->from_user ? req->from_user : "", req->from_user ? strlen(req->from_user) : 0);
        const bester_json *info = bester_json_get(bester_json_get(bester_json_get(req->frame, "header"), "from"), "info");
        if (info) {
            bester_buf_adds(&b, ",\"info\":");
            bester_buf_add(&b, info->raw, info->raw_len);
        }
        bester_buf_adds(&b, "}");
        int r = bester_reply(a, b.data);
        bester_buf_free(&b);
        return r;
    }
    return bester_reply_error(a, "bad_request", "unknown action");
}

int main(void) {
    int fd = bester_handler_connect(NULL);
    return fd < 0 || bester_serve(fd, handle, NULL) < 0;
}
