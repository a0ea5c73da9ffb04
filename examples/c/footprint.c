/*
 * footprint.c — what linking and opening hnapi costs a host process: resident memory
 * and threads before hnapi_client_open, after it, and after the first transaction (when
 * the connection to the gateway exists), from /proc/self/status (Linux).
 *
 *   cc -Wall -Iinclude examples/c/footprint.c -Ltarget/release -lhnapi -o footprint
 *   LD_LIBRARY_PATH=target/release ./footprint client.toml
 *
 * Prints three lines, `STAGE rss_kib=N threads=N`. Exit status 0 when the transaction
 * got an HL7 answer, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hnapi.h"

/* The number after `field:` in /proc/self/status, or -1. */
static long status_field(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    long value = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            value = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return value;
}

static void report(const char *stage) {
    printf("%s rss_kib=%ld threads=%ld\n", stage, status_field("VmRSS"), status_field("Threads"));
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CLIENT_TOML\n", argv[0]);
        return 2;
    }
    report("before_open");
    HnapiClient *client = NULL;
    int32_t rc = hnapi_client_open(argv[1], &client);
    if (rc != HNET_RTRN_SUCCESS) {
        char why[512];
        hnapi_last_error(why, sizeof why);
        fprintf(stderr, "hnapi_client_open: %s: %s\n", hnapi_code_name(rc), why);
        return 1;
    }
    report("after_open");

    static const char msg[] =
        "MSH|^~\\&|FOOTPRINT|BC00000098|HNSIM-ECHO|BC0003000|20261123120000||R03|FOOTPRINT1|D|2.3\r"
        "PID||9029274643^^^BC^PH\r";
    unsigned char answer[4096];
    size_t len = 0;
    rc = hnapi_send_receive(client, (const uint8_t *)msg, sizeof msg - 1, 0, answer, sizeof answer,
                            &len);
    report("after_first_transaction");
    hnapi_client_close(client);
    if (rc != HNET_RTRN_SUCCESS) {
        fprintf(stderr, "hnapi_send_receive: %s\n", hnapi_code_name(rc));
        return 1;
    }
    return 0;
}
