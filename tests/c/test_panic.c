/*
 * What a C host sees when the library panics: a library built with the `test-panic`
 * feature (tests only) panics inside the exported function that HNAPI_TEST_PANIC names.
 *
 *   HNAPI_TEST_PANIC=hnapi_send_receive test_panic CLIENT_TOML SERVER_TOML
 *
 * (HNAPI_TEST_PANIC=transaction makes every transaction panic instead, in the caller's
 * thread for hnapi_send_receive and in a task of the library's for hnapi_send.)
 * The named function must return HNET_RTRN_INTERNALERROR (or, for a function returning
 * nothing, just return) with a last-error sentence naming it, write none of its
 * out-parameters, and leave the process and the library working: every other call
 * succeeds, and a transaction afterwards is answered by the sandbox's simulator (or, for
 * the server application's functions, the request it was handed gets its answer: the
 * server's, or the gateway's AR once the server application closes).
 * Exit status 0 when all of that holds; the named function must be one this program calls.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hnapi.h"

static const char *forced;
static int panics;
static atomic_int panic_lines; /* log lines reporting a panic */

/* The library reports its panics as one log line, not on standard error. */
static void on_log(int32_t level, const char *line, void *ctx) {
    (void)ctx;
    if (level == 1 && strstr(line, "the library panicked at ") != NULL) {
        atomic_fetch_add(&panic_lines, 1);
        printf("     logged: %s\n", line);
    }
}

static void fail(const char *what) {
    char why[512];
    hnapi_last_error(why, sizeof why);
    fprintf(stderr, "FAIL %s (last error: %s)\n", what, why);
    exit(1);
}

/* After the forced panic: the log callback (when it was set) heard of it. */
static void logged(void) {
    if (strcmp(forced, "hnapi_set_log_callback") != 0 && atomic_load(&panic_lines) == 0)
        fail("the panic was not logged through the callback");
}

/* Whether `function` is the one forced to panic; if so, checks its code and last error. */
static int panicked(const char *function, int32_t rc) {
    if (strcmp(forced, function) != 0) {
        if (rc != HNET_RTRN_SUCCESS) {
            fprintf(stderr, "%s returned %s\n", function, hnapi_code_name(rc));
            fail("a call that was not forced to panic failed");
        }
        return 0;
    }
    if (rc != HNET_RTRN_INTERNALERROR) {
        fprintf(stderr, "%s returned %s\n", function, hnapi_code_name(rc));
        fail("the forced panic did not give HNET_RTRN_INTERNALERROR");
    }
    char why[512], expected[128];
    hnapi_last_error(why, sizeof why);
    snprintf(expected, sizeof expected, "internal error in %s", function);
    if (strstr(why, expected) == NULL) fail("the last error does not name the function");
    printf("ok   %s: %s, \"%s\"\n", function, hnapi_code_name(rc), why);
    logged();
    panics++;
    return 1;
}

/* After a function returning nothing: when it was the one forced to panic, it returned
 * (the process goes on) with a last error naming it. */
static void void_panicked(const char *function) {
    if (strcmp(forced, function) != 0) return;
    char why[512], expected[128];
    hnapi_last_error(why, sizeof why);
    snprintf(expected, sizeof expected, "internal error in %s", function);
    if (strstr(why, expected) == NULL) fail("the panic was not caught");
    printf("ok   %s: returned, \"%s\"\n", function, why);
    logged();
    panics++;
}

/* One transaction with send_receive or, when that is the panicking one, send + receive. */
static void transaction(HnapiClient *c, const char *control) {
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "MSH|^~\\&|CPANIC|BC00000098|HNSIM-ECHO|BC0003000|20261124120000||R03|%s|D|2.3\r",
                     control);
    unsigned char answer[4096];
    size_t len = 0;
    char msa[64];
    snprintf(msa, sizeof msa, "MSA|AA|%s|", control);
    if (strcmp(forced, "hnapi_send_receive") != 0) {
        int32_t rc = hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 0, answer, sizeof answer, &len);
        if (rc != HNET_RTRN_SUCCESS) fail("hnapi_send_receive after the panic");
    } else {
        uint64_t ticket = 0;
        if (hnapi_send(c, (const uint8_t *)msg, (size_t)n, 0, &ticket) != HNET_RTRN_SUCCESS) fail("hnapi_send");
        if (hnapi_receive(c, ticket, UINT32_MAX, answer, sizeof answer, &len) != HNET_RTRN_SUCCESS)
            fail("hnapi_receive");
    }
    if (len >= sizeof answer) fail("answer too long");
    answer[len] = 0;
    if (strstr((const char *)answer, msa) == NULL) fail("the simulator's answer is not there");
}


/* The server application's part: open, wait until the gateway has it, receive one
 * request to HNAPI-DEMO from the client and answer it. Whichever of its functions panics,
 * the client's request still gets exactly one answer. */
static void server_part(HnapiClient *c, const char *server_toml) {
    /* It sends with hnapi_send and hnapi_receive: not when one of them is to panic. */
    if (strcmp(forced, "hnapi_send") == 0 || strcmp(forced, "hnapi_receive") == 0) return;
    HnapiServer *s = NULL;
    if (panicked("hnapi_server_open", hnapi_server_open(server_toml, &s))) {
        if (s != NULL) fail("hnapi_server_open wrote its out-parameter");
        return;
    }
    if (panicked("hnapi_server_wait_connected", hnapi_server_wait_connected(s, 10000))) {
        hnapi_server_close(s);
        return;
    }
    const char msg[] = "MSH|^~\\&|CPANIC|BC00000098|HNAPI-DEMO|BC0003000|20261124120000||R03|CPANIC3|D|2.3\r";
    uint64_t ticket = 0;
    if (hnapi_send(c, (const uint8_t *)msg, sizeof msg - 1, 10000, &ticket) != HNET_RTRN_SUCCESS) fail("hnapi_send");
    unsigned char request[4096];
    uint64_t id = 777;
    size_t len = 12345;
    int32_t rc = hnapi_server_receive(s, 10000, &id, request, sizeof request, &len);
    int answered = 0;
    if (panicked("hnapi_server_receive", rc)) {
        if (id != 777 || len != 12345) fail("hnapi_server_receive wrote an out-parameter");
    } else {
        const char answer[] =
            "MSH|^~\\&|HNAPI-DEMO|BC00000099|CPANIC|BC00000098|20261124120000||ACK|SCPANIC3|D|2.3\r"
            "MSA|AA|CPANIC3\r";
        answered = !panicked("hnapi_server_respond",
                             hnapi_server_respond(s, id, (const uint8_t *)answer, sizeof answer - 1));
    }
    /* Closing the server application makes the gateway answer what it still waits for. */
    hnapi_server_close(s);
    void_panicked("hnapi_server_close");
    unsigned char reply[4096];
    len = 0;
    if (hnapi_receive(c, ticket, UINT32_MAX, reply, sizeof reply - 1, &len) != HNET_RTRN_SUCCESS)
        fail("the request to the server application got no answer");
    reply[len] = 0;
    /* Unanswered, the gateway's AR: TXFR024E when the request had reached the server
       application before it closed, HNPS007E when it had not. */
    const char *expected = answered ? "MSA|AA|CPANIC3" : "MSA|AR|CPANIC3|";
    const char *msa = strstr((const char *)reply, expected);
    if (msa == NULL || (!answered && (strncmp((const char *)reply, "MSH|^~\\&|HNGATE|", 16) != 0 ||
                                      (strncmp(msa + 15, "TXFR024E", 8) != 0 &&
                                       strncmp(msa + 15, "HNPS007E", 8) != 0)))) {
        fprintf(stderr, "the answer: %s\n", (const char *)reply);
        fail(expected);
    }
    char shown[64];
    snprintf(shown, sizeof shown, "%.*s", answered ? 14 : 23, msa);
    printf("ok   the request to the server application was answered (%s)\n", shown);
}

/* HNAPI_TEST_PANIC=transaction: every transaction panics inside the library. The
 * caller is not left waiting: each call returns HNET_RTRN_INTERNALERROR at once, with a
 * last error, and the client can still be used and closed. */
static void transaction_panics(const char *client_toml) {
    HnapiClient *c = NULL;
    if (hnapi_client_open(client_toml, &c) != HNET_RTRN_SUCCESS) fail("hnapi_client_open");
    const char msg[] = "MSH|^~\\&|CPANIC|BC00000098|HNSIM-ECHO|BC0003000|20261124120000||R03|CPANIC4|D|2.3\r";
    unsigned char answer[4096];
    for (int i = 0; i < 3; i++) {
        size_t len = 12345;
        int32_t rc = hnapi_send_receive(c, (const uint8_t *)msg, sizeof msg - 1, 0, answer, sizeof answer, &len);
        if (rc != HNET_RTRN_INTERNALERROR || len != 12345) fail("hnapi_send_receive: not INTERNALERROR");
        char why[512];
        hnapi_last_error(why, sizeof why);
        if (strstr(why, "internal error in hnapi_send_receive") == NULL) fail("hnapi_send_receive's last error");
        if (i == 0) printf("ok   hnapi_send_receive: HNET_RTRN_INTERNALERROR, \"%s\"\n", why);
        uint64_t ticket = 0;
        if (hnapi_send(c, (const uint8_t *)msg, sizeof msg - 1, 0, &ticket) != HNET_RTRN_SUCCESS) fail("hnapi_send");
        rc = hnapi_receive(c, ticket, UINT32_MAX, answer, sizeof answer, &len);
        if (rc != HNET_RTRN_INTERNALERROR || len != 12345) fail("hnapi_receive: not INTERNALERROR");
        hnapi_last_error(why, sizeof why);
        if (strstr(why, "without an answer") == NULL) fail("hnapi_receive's last error");
        if (i == 0) printf("ok   hnapi_receive: the task's panic gives HNET_RTRN_INTERNALERROR, \"%s\"\n", why);
        logged();
        if (hnapi_receive(c, ticket, 0, answer, sizeof answer, &len) != HNET_RTRN_UNKNOWNTICKET)
            fail("the ticket outlived its outcome");
    }
    hnapi_client_close(c);
    printf("ok   the client closes\n");
}

int main(int argc, char **argv) {
    forced = getenv("HNAPI_TEST_PANIC");
    if (argc != 3 || forced == NULL) {
        fprintf(stderr, "usage: HNAPI_TEST_PANIC=FUNCTION test_panic CLIENT_TOML SERVER_TOML\n");
        return 2;
    }

    hnapi_set_log_callback(on_log, NULL, 3);
    void_panicked("hnapi_set_log_callback");

    HnapiClient *c = NULL;
    if (strcmp(forced, "transaction") == 0) {
        transaction_panics(argv[1]);
        return 0;
    }
    if (panicked("hnapi_client_open", hnapi_client_open(argv[1], &c))) {
        if (c != NULL) fail("hnapi_client_open wrote its out-parameter");
        if (hnapi_client_open_toml("facility = 1", NULL, &c) != HNET_RTRN_CONFIGERROR)
            fail("the library works after the panic");
        printf("ok   the library still answers (a bad configuration is CONFIGERROR)\n");
        return 0;
    }

    const char msg[] = "MSH|^~\\&|CPANIC|BC00000098|HNSIM-ECHO|BC0003000|20261124120000||R03|CPANIC1|D|2.3\r";
    unsigned char answer[4096];
    size_t len = 12345;
    int32_t rc = hnapi_send_receive(c, (const uint8_t *)msg, sizeof msg - 1, 0, answer, sizeof answer, &len);
    if (panicked("hnapi_send_receive", rc) && len != 12345) fail("hnapi_send_receive wrote *len");

    uint64_t ticket = 777;
    rc = hnapi_send(c, (const uint8_t *)msg, sizeof msg - 1, 0, &ticket);
    if (panicked("hnapi_send", rc)) {
        if (ticket != 777) fail("hnapi_send wrote *ticket");
    } else {
        len = 12345;
        rc = hnapi_receive(c, ticket, UINT32_MAX, answer, sizeof answer, &len);
        if (panicked("hnapi_receive", rc) && len != 12345) fail("hnapi_receive wrote *len");
    }

    server_part(c, argv[2]);

    transaction(c, "CPANIC2");
    printf("ok   a transaction after the panic is answered\n");

    hnapi_client_close(c);
    void_panicked("hnapi_client_close");
    if (panics != 1) {
        fprintf(stderr, "FAIL %s was not forced to panic: is the library built with --features test-panic?\n",
                forced);
        return 1;
    }
    printf("ok   the process goes on after a panic in %s\n", forced);
    return 0;
}
