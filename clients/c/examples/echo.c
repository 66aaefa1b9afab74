/* An echo handler: replies with the request's own type and data. */
#include "bester.h"

static int echo(const bester_req *req, bester_answer *answer, void *userdata) {
    (void)userdata;
    return bester_reply_type(answer, req->type, req->data);
}

int main(void) {
    int fd = bester_handler_connect(NULL); /* $BESTER_SOCKET */
    return fd < 0 || bester_serve(fd, echo, NULL) < 0;
}
