/* A client: log in, send one echo request, print the reply's data.
 * Usage: client HOST PORT USER PASSWORD */
#include <stdio.h>
#include "bester.h"

int main(int argc, char **argv) {
    bester_error err;
    bester_message reply;
    bester_client *c = argc == 5 ? bester_connect(argv[1], argv[2], 10000, &err) : NULL;
    if (!c || bester_login_password(c, argv[3], argv[4], &err) < 0 ||
        bester_request(c, "echo", "{\"hello\":\"world\"}", &reply, &err) < 0) {
        fprintf(stderr, "%s: %s\n", argc == 5 ? err.code : "usage", argc == 5 ? err.text : "client HOST PORT USER PASSWORD");
        return 1;
    }
    printf("%.*s\n", (int)reply.data_len, reply.data);
    bester_message_free(&reply);
    bester_close(c);
    return 0;
}
