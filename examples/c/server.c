/*
 * server.c — a receiving application: answers every request the gateway routes to it
 * with an AA acknowledgment.
 *
 *   cc -Wall -Iinclude examples/c/server.c -Ltarget/release -lhnapi -o server
 *   LD_LIBRARY_PATH=target/release ./server server.toml [COUNT]
 *
 * server.toml names this application's facility (registered in HNGard with the role
 * server), its credential, the gateways and the application names (MSH-5) it serves;
 * gate.toml routes them to it with destination = "app:NAME". With COUNT it stops after
 * answering that many requests; without, it serves until killed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hnapi.h"

#define FIELDS 13

/* Splits the request's first segment (its MSH) into fields; field[n] is MSH-(n+1)
   for n >= 1 (field[0] is "MSH"), and MSH-2 sits in field[1]. */
static int msh_fields(const unsigned char *msg, size_t len, char field[FIELDS][64]) {
    memset(field, 0, FIELDS * 64);
    if (len < 4 || memcmp(msg, "MSH", 3) != 0) {
        return -1;
    }
    char sep = (char)msg[3];
    int n = 0;
    size_t at = 0;
    for (size_t i = 0; i < len && msg[i] != '\r' && msg[i] != '\n' && n < FIELDS; i++) {
        if ((char)msg[i] == sep) {
            n++;
            at = 0;
            continue;
        }
        if (at < 63) {
            field[n][at++] = (char)msg[i];
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s SERVER_TOML [COUNT]\n", argv[0]);
        return 2;
    }
    long count = argc == 3 ? atol(argv[2]) : -1;
    HnapiServer *server = NULL;
    int32_t rc = hnapi_server_open(argv[1], &server);
    if (rc != HNET_RTRN_SUCCESS) {
        char why[512];
        hnapi_last_error(why, sizeof why);
        fprintf(stderr, "hnapi_server_open: %s: %s\n", hnapi_code_name(rc), why);
        return 1;
    }
    size_t cap = 4096;
    unsigned char *request = malloc(cap);
    long answered = 0;
    while (request != NULL && (count < 0 || answered < count)) {
        uint64_t id = 0;
        size_t len = 0;
        rc = hnapi_server_receive(server, 1000, &id, request, cap, &len);
        if (rc == HNET_RTRN_PENDING) {
            continue; /* nothing yet; a real application would check for shutdown here */
        }
        if (rc == HNET_RTRN_BUFFERTOOSMALL) {
            unsigned char *bigger = realloc(request, len); /* the request is kept */
            if (bigger == NULL) {
                break;
            }
            request = bigger;
            cap = len;
            continue;
        }
        if (rc != HNET_RTRN_SUCCESS) {
            fprintf(stderr, "hnapi_server_receive: %s\n", hnapi_code_name(rc));
            break;
        }
        char f[FIELDS][64];
        if (msh_fields(request, len, f) != 0) {
            continue;
        }
        char now[32];
        time_t t = time(NULL);
        strftime(now, sizeof now, "%Y%m%d%H%M%S", localtime(&t));
        /* MSH-3/4 and MSH-5/6 swapped, MSA-2 the request's MSH-10 (Volume 5, 2.4.11). */
        char answer[1024];
        int n = snprintf(answer, sizeof answer,
                         "MSH|^~\\&|%s|%s|%s|%s|%s||ACK|%s%ld|%s|%s\r"
                         "MSA|AA|%s|HJMB001ISUCCESSFULLY COMPLETED\r",
                         f[4], f[5], f[2], f[3], now, now, answered, f[10], f[11], f[9]);
        rc = hnapi_server_respond(server, id, (const uint8_t *)answer, (size_t)n);
        if (rc != HNET_RTRN_SUCCESS) {
            fprintf(stderr, "hnapi_server_respond: %s\n", hnapi_code_name(rc));
        } else {
            answered++;
            printf("answered request %ld (control id %s)\n", answered, f[9]);
            fflush(stdout);
        }
    }
    free(request);
    hnapi_server_close(server);
    return 0;
}
