/*
 * send.c — send one HL7 message file through hnsecure and print the answer.
 *
 *   cc -Wall -Iinclude examples/c/send.c -Ltarget/release -lhnapi -o send
 *   LD_LIBRARY_PATH=target/release ./send client.toml request.hl7
 *
 * The answer is printed with each segment on its own line. Exit status 0 when an HL7
 * answer came back (the receiver's, or a network ACK from HNAPI), 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hnapi.h"

static void fail(const char *what, int32_t rc) {
    char why[512];
    hnapi_last_error(why, sizeof why);
    fprintf(stderr, "%s: %s: %s\n", what, hnapi_code_name(rc), why);
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return NULL;
    }
    size_t cap = 4096, used = 0;
    unsigned char *data = malloc(cap);
    size_t n;
    while (data != NULL && (n = fread(data + used, 1, cap - used, f)) > 0) {
        used += n;
        if (used == cap) {
            unsigned char *bigger = realloc(data, cap *= 2);
            if (bigger == NULL) {
                free(data);
                data = NULL;
            } else {
                data = bigger;
            }
        }
    }
    fclose(f);
    *len = used;
    return data;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CLIENT_TOML MESSAGE_FILE\n", argv[0]);
        return 2;
    }
    size_t msg_len = 0;
    unsigned char *msg = read_file(argv[2], &msg_len);
    if (msg == NULL) {
        return 1;
    }

    HnapiClient *client = NULL;
    int32_t rc = hnapi_client_open(argv[1], &client);
    if (rc != HNET_RTRN_SUCCESS) {
        fail("hnapi_client_open", rc);
        free(msg);
        return 1;
    }

    /* Start small; on HNET_RTRN_BUFFERTOOSMALL grow to *len and call again: the answer
       was kept, the message is not sent twice. */
    size_t cap = 256, len = 0;
    unsigned char *answer = malloc(cap);
    rc = hnapi_send_receive(client, msg, msg_len, 0, answer, cap, &len);
    if (rc == HNET_RTRN_BUFFERTOOSMALL) {
        unsigned char *bigger = realloc(answer, len);
        if (bigger != NULL) {
            answer = bigger;
            cap = len;
            rc = hnapi_send_receive(client, msg, msg_len, 0, answer, cap, &len);
        }
    }
    int status = 0;
    if (rc == HNET_RTRN_SUCCESS) {
        for (size_t i = 0; i < len; i++) {
            putchar(answer[i] == '\r' ? '\n' : answer[i]);
        }
    } else {
        fail("hnapi_send_receive", rc);
        status = 1;
    }
    free(answer);
    free(msg);
    hnapi_client_close(client);
    return status;
}
