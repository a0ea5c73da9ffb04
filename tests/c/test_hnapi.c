/*
 * The C ABI as a C program uses it, against a running sandbox.
 *
 *   test_hnapi CLIENT_TOML SERVER_TOML
 *
 * Built by the test command with -Wall -Wextra -Werror and AddressSanitizer (which also
 * checks for leaks at exit). Prints one line per case; exit status 0 when all pass.
 * tools/windows.sh builds it with mingw-w64 against hnapi.dll (64- and 32-bit) and runs it
 * under Wine, without AddressSanitizer (mingw has none).
 */
#define _POSIX_C_SOURCE 200809L
#ifdef _WIN32
#include <windows.h>
#include <tlhelp32.h>
#else
#include <dirent.h>
#endif
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hnapi.h"

static const char *client_toml;
static const char *server_toml;
static int failures;

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "  FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, "\n");                                               \
            failures++;                                                          \
            return;                                                              \
        }                                                                        \
    } while (0)

static void run(const char *name, void (*test)(void)) {
    int before = failures;
    test();
    printf("%s %s\n", failures == before ? "ok  " : "FAIL", name);
    fflush(stdout);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static const char *last_error(void) {
    static _Thread_local char text[512];
    hnapi_last_error(text, sizeof text);
    return text;
}

/* A request from the sandbox's facility to `application`, with a unique control id. */
static int request(char *out, size_t cap, const char *application, const char *kind, const char *control) {
    return snprintf(out, cap,
                    "MSH|^~\\&|CTEST|BC00000098|%s|BC0003000|20261123120000||%s|%s|D|2.3\r"
                    "PID||9029274643^^^BC^PH\r",
                    application, kind, control);
}

/* Field `n` (from 1) of the segment `id` in an answer, or "". */
static const char *field(const unsigned char *msg, size_t len, const char *id, int n, char *out, size_t cap) {
    out[0] = '\0';
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && msg[end] != '\r' && msg[end] != '\n') {
            end++;
        }
        if (end - i >= 3 && memcmp(msg + i, id, 3) == 0) {
            int at = strcmp(id, "MSH") == 0 ? 1 : 0; /* MSH-1 is the separator itself */
            size_t start = i + 3;
            for (size_t j = i + 3; j <= end; j++) {
                if (j == end || msg[j] == '|') {
                    if (at == n) {
                        size_t l = j - start < cap - 1 ? j - start : cap - 1;
                        memcpy(out, msg + start, l);
                        out[l] = '\0';
                        return out;
                    }
                    at++;
                    start = j + 1;
                }
            }
            return out;
        }
        i = end + 1;
    }
    return out;
}

static HnapiClient *open_client(void) {
    HnapiClient *c = NULL;
    int32_t rc = hnapi_client_open(client_toml, &c);
    if (rc != HNET_RTRN_SUCCESS) {
        fprintf(stderr, "hnapi_client_open: %s: %s\n", hnapi_code_name(rc), last_error());
        exit(1);
    }
    return c;
}

static void test_version_and_codes(void) {
    CHECK(strncmp(hnapi_version(), "hnsecure ", 9) == 0, "%s", hnapi_version());
    CHECK(strcmp(hnapi_code_name(HNET_RTRN_SUCCESS), "HNET_RTRN_SUCCESS") == 0, "name");
    CHECK(strcmp(hnapi_code_name(HNET_RTRN_BUFFERTOOSMALL), "HNET_RTRN_BUFFERTOOSMALL") == 0, "name");
    CHECK(strcmp(hnapi_code_name(-7), "HNET_RTRN_UNKNOWN") == 0, "unknown");
}

static void test_null_parameters(void) {
    HnapiClient *c = NULL;
    CHECK(hnapi_client_open(NULL, &c) == HNET_RTRN_INVALIDPARAMETER, "NULL path");
    CHECK(c == NULL, "out-parameters are written only on success");
    CHECK(strstr(last_error(), "config_path is NULL") != NULL, "%s", last_error());
    CHECK(hnapi_client_open(client_toml, NULL) == HNET_RTRN_INVALIDPARAMETER, "NULL out");
    CHECK(hnapi_client_open("/no/such/client.toml", &c) == HNET_RTRN_CONFIGERROR, "missing file");
    CHECK(strstr(last_error(), "/no/such/client.toml") != NULL, "%s", last_error());

    c = open_client();
    char msg[512];
    int n = request(msg, sizeof msg, "RAIEND-PYR-RL", "R35", "CNULL1");
    unsigned char buf[4096];
    size_t len = 0;
    uint64_t ticket = 0;
    CHECK(hnapi_send_receive(NULL, (const uint8_t *)msg, (size_t)n, 0, buf, sizeof buf, &len) == HNET_RTRN_INVALIDPARAMETER, "NULL client");
    CHECK(hnapi_send_receive(c, NULL, 10, 0, buf, sizeof buf, &len) == HNET_RTRN_INVALIDPARAMETER, "NULL msg");
    CHECK(hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 0, buf, sizeof buf, NULL) == HNET_RTRN_INVALIDPARAMETER, "NULL len");
    CHECK(hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 0, NULL, 10, &len) == HNET_RTRN_INVALIDPARAMETER, "NULL buf, cap 10");
    CHECK(hnapi_send(c, (const uint8_t *)msg, (size_t)n, 0, NULL) == HNET_RTRN_INVALIDPARAMETER, "NULL ticket");
    CHECK(hnapi_receive(c, 987654321, 0, buf, sizeof buf, &len) == HNET_RTRN_UNKNOWNTICKET, "unknown ticket");
    CHECK(hnapi_server_receive(NULL, 0, &ticket, buf, sizeof buf, &len) == HNET_RTRN_INVALIDPARAMETER, "NULL server");
    CHECK(hnapi_server_respond(NULL, 1, (const uint8_t *)msg, (size_t)n) == HNET_RTRN_INVALIDPARAMETER, "NULL server");
    CHECK(len == 0 && ticket == 0, "nothing written on failure");

    /* Every other pointer of every function: NULL is INVALIDPARAMETER with a sentence
       naming it, and no out-parameter is written. */
    char toml[2048];
    snprintf(toml, sizeof toml, "facility = \"BC00000098\"\ncredential = \"c.toml\"\ngateways = [\"127.0.0.1:1\"]\n");
    HnapiClient *other = NULL;
    HnapiServer *s = NULL;
    uint64_t id = 4242;
    len = 4242;
    ticket = 4242;
    int32_t rc;
#define NULL_CASE(call, name)                                                                    \
    rc = (call);                                                                                 \
    CHECK(rc == HNET_RTRN_INVALIDPARAMETER, "%s: %s", #call, hnapi_code_name(rc));              \
    CHECK(strstr(last_error(), name " is NULL") != NULL, "%s: last error \"%s\"", #call, last_error())
    NULL_CASE(hnapi_client_open_toml(NULL, NULL, &other), "config_toml");
    NULL_CASE(hnapi_client_open_toml(toml, NULL, NULL), "out");
    NULL_CASE(hnapi_server_open(NULL, &s), "config_path");
    NULL_CASE(hnapi_server_open(server_toml, NULL), "out");
    NULL_CASE(hnapi_send(NULL, (const uint8_t *)msg, (size_t)n, 0, &ticket), "client");
    NULL_CASE(hnapi_send(c, NULL, (size_t)n, 0, &ticket), "msg");
    CHECK(hnapi_send(c, (const uint8_t *)msg, (size_t)n, 0, &ticket) == HNET_RTRN_SUCCESS, "send");
    uint64_t live = ticket;
    ticket = 4242;
    NULL_CASE(hnapi_receive(NULL, live, 0, buf, sizeof buf, &len), "client");
    NULL_CASE(hnapi_receive(c, live, 0, buf, sizeof buf, NULL), "len");
    NULL_CASE(hnapi_receive(c, live, 0, NULL, sizeof buf, &len), "buf");
    CHECK(hnapi_receive(c, live, UINT32_MAX, buf, sizeof buf, &len) == HNET_RTRN_SUCCESS, "the ticket lived on");
    len = 4242;
    NULL_CASE(hnapi_server_wait_connected(NULL, 0), "server");
    CHECK(hnapi_server_open(server_toml, &s) == HNET_RTRN_SUCCESS, "server open: %s", last_error());
    NULL_CASE(hnapi_server_receive(s, 0, NULL, buf, sizeof buf, &len), "request_id");
    NULL_CASE(hnapi_server_receive(s, 0, &id, buf, sizeof buf, NULL), "len");
    NULL_CASE(hnapi_server_receive(s, 0, &id, NULL, sizeof buf, &len), "buf");
    NULL_CASE(hnapi_server_respond(s, 1, NULL, 10), "msg");
#undef NULL_CASE
    CHECK(other == NULL && id == 4242 && len == 4242 && ticket == 4242, "nothing written on failure");
    hnapi_client_shutdown(NULL);
    hnapi_server_shutdown(NULL);
    hnapi_client_close(NULL);
    hnapi_server_close(NULL);
    hnapi_server_close(s);
    hnapi_client_close(c);

    /* The last error: its length, cut to fit, NUL-terminated. */
    CHECK(hnapi_client_open(NULL, &c) == HNET_RTRN_INVALIDPARAMETER, "again");
    size_t full = hnapi_last_error(NULL, 0);
    char small[8];
    CHECK(hnapi_last_error(small, sizeof small) == full && strlen(small) == 7, "cut: %s", small);
    CHECK(hnapi_code_name(HNET_RTRN_SUCCESS) != NULL && full > 7, "full %zu", full);
}

static void test_buffer_too_small_then_enough(void) {
    HnapiClient *c = open_client();
    char msg[512];
    int n = request(msg, sizeof msg, "RAIEND-PYR-RL", "R35", "CSMALL1");
    unsigned char tiny[16];
    size_t needed = 0;
    int32_t rc = hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 0, tiny, sizeof tiny, &needed);
    CHECK(rc == HNET_RTRN_BUFFERTOOSMALL, "%s", hnapi_code_name(rc));
    CHECK(needed > sizeof tiny, "needed %zu", needed);
    unsigned char *buf = malloc(needed);
    size_t len = 0;
    rc = hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 0, buf, needed, &len);
    CHECK(rc == HNET_RTRN_SUCCESS, "%s: %s", hnapi_code_name(rc), last_error());
    CHECK(len == needed, "len %zu needed %zu", len, needed);
    char f[64];
    CHECK(strcmp(field(buf, len, "MSA", 2, f, sizeof f), "CSMALL1") == 0, "MSA-2 %s", f);

    /* The same with a ticket: the answer stays with it. */
    uint64_t ticket = 0;
    CHECK(hnapi_send(c, (const uint8_t *)msg, (size_t)n, 0, &ticket) == HNET_RTRN_SUCCESS, "send");
    rc = hnapi_receive(c, ticket, UINT32_MAX, tiny, sizeof tiny, &needed);
    CHECK(rc == HNET_RTRN_BUFFERTOOSMALL, "%s", hnapi_code_name(rc));
    rc = hnapi_receive(c, ticket, 0, buf, needed, &len);
    CHECK(rc == HNET_RTRN_SUCCESS && len == needed, "%s", hnapi_code_name(rc));
    CHECK(hnapi_receive(c, ticket, 0, buf, needed, &len) == HNET_RTRN_UNKNOWNTICKET, "received once");
    free(buf);
    hnapi_client_close(c);
}

static void test_input_without_msh(void) {
    HnapiClient *c = open_client();
    const char *not_hl7 = "PID||9029274643^^^BC^PH\r";
    unsigned char buf[1024];
    size_t len = 0;
    int32_t rc = hnapi_send_receive(c, (const uint8_t *)not_hl7, strlen(not_hl7), 0, buf, sizeof buf, &len);
    CHECK(rc == HNET_RTRN_INVALIDFORMATERROR, "%s", hnapi_code_name(rc));
    CHECK(strstr(last_error(), "MSH") != NULL, "%s", last_error());
    CHECK(strstr(last_error(), "9029274643") == NULL, "no PHI in the last error");
    uint64_t ticket = 4242;
    CHECK(hnapi_send(c, (const uint8_t *)"", 0, 0, &ticket) == HNET_RTRN_INVALIDFORMATERROR, "empty");
    CHECK(hnapi_send(c, (const uint8_t *)not_hl7, strlen(not_hl7), 0, &ticket) == HNET_RTRN_INVALIDFORMATERROR, "no MSH");
    CHECK(ticket == 4242, "no ticket written on failure");
    hnapi_client_close(c);
}

static void test_unreachable_gateway(void) {
    /* The sandbox's credential, by absolute path, and a gateway nobody listens on. */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", client_toml);
    char *slash = strrchr(dir, '/');
    CHECK(slash != NULL, "client_toml has a folder");
    *slash = '\0';
    char toml[2048];
    snprintf(toml, sizeof toml,
             "facility = \"BC00000098\"\ncredential = \"%s/credential.toml\"\n"
             "gateways = [\"127.0.0.1:1\"]\nconnect_timeout_secs = 2\n",
             dir);
    HnapiClient *c = NULL;
    int32_t rc = hnapi_client_open_toml(toml, "/", &c);
    CHECK(rc == HNET_RTRN_SUCCESS, "%s: %s", hnapi_code_name(rc), last_error());
    char msg[512];
    int n = request(msg, sizeof msg, "RAIEND-PYR-RL", "R35", "CUNREACH1");
    unsigned char buf[2048];
    size_t len = 0;
    rc = hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 5000, buf, sizeof buf, &len);
    CHECK(rc == HNET_RTRN_SUCCESS, "an answer exists, so success: %s", hnapi_code_name(rc));
    char f[128];
    CHECK(strcmp(field(buf, len, "MSH", 3, f, sizeof f), "HNAPI") == 0, "MSH-3 %s", f);
    CHECK(strcmp(field(buf, len, "MSA", 1, f, sizeof f), "AR") == 0, "MSA-1 %s", f);
    CHECK(strcmp(field(buf, len, "MSA", 2, f, sizeof f), "CUNREACH1") == 0, "MSA-2 %s", f);
    CHECK(strncmp(field(buf, len, "MSA", 3, f, sizeof f), "TXFR024E", 8) == 0, "MSA-3 %s", f);
    hnapi_client_close(c);
}

static void test_timeout(void) {
    HnapiClient *c = open_client();
    char msg[512];
    int n = request(msg, sizeof msg, "HNSIM-NORESPONSE", "R03", "CTIMEOUT1");
    unsigned char buf[2048];
    size_t len = 0;
    double started = now_seconds();
    int32_t rc = hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 1000, buf, sizeof buf, &len);
    double took = now_seconds() - started;
    CHECK(rc == HNET_RTRN_SUCCESS, "%s", hnapi_code_name(rc));
    CHECK(took < 2.0, "answered in %.2f s", took);
    char f[128];
    CHECK(strcmp(field(buf, len, "MSA", 1, f, sizeof f), "AR") == 0, "MSA-1 %s", f);
    CHECK(strncmp(field(buf, len, "MSA", 3, f, sizeof f), "TXFR024E", 8) == 0, "MSA-3 %s", f);
    CHECK(strcmp(field(buf, len, "MSA", 2, f, sizeof f), "CTIMEOUT1") == 0, "MSA-2 %s", f);
    hnapi_client_close(c);
}

static HnapiClient *shared;
static atomic_int thread_failures;

static void *sender(void *arg) {
    int t = (int)(intptr_t)arg; /* intptr_t: long is 32 bits on 64-bit Windows */
    unsigned char buf[4096];
    for (int i = 0; i < 100; i++) {
        char control[32], msg[512], f[64];
        snprintf(control, sizeof control, "T%02dN%03d", t, i);
        int n = request(msg, sizeof msg, "RAIEND-PYR-RL", "R35", control);
        size_t len = 0;
        int32_t rc = hnapi_send_receive(shared, (const uint8_t *)msg, (size_t)n, 0, buf, sizeof buf, &len);
        if (rc != HNET_RTRN_SUCCESS || strcmp(field(buf, len, "MSA", 2, f, sizeof f), control) != 0) {
            atomic_fetch_add(&thread_failures, 1);
        }
    }
    return NULL;
}

static void test_sixteen_threads(void) {
    shared = open_client();
    pthread_t threads[16];
    for (intptr_t t = 0; t < 16; t++) {
        pthread_create(&threads[t], NULL, sender, (void *)t);
    }
    for (int t = 0; t < 16; t++) {
        pthread_join(threads[t], NULL);
    }
    hnapi_client_close(shared);
    CHECK(atomic_load(&thread_failures) == 0, "%d answers wrong", atomic_load(&thread_failures));
}

static void test_fifty_tickets(void) {
    HnapiClient *c = open_client();
    uint64_t tickets[50];
    for (int i = 0; i < 50; i++) {
        char control[32], msg[512];
        snprintf(control, sizeof control, "TICKET%02d", i);
        int n = request(msg, sizeof msg, "RAIEND-PYR-RL", "R35", control);
        CHECK(hnapi_send(c, (const uint8_t *)msg, (size_t)n, 0, &tickets[i]) == HNET_RTRN_SUCCESS, "send %d", i);
    }
    unsigned char buf[4096];
    for (int i = 49; i >= 0; i--) {
        size_t len = 0;
        char control[32], f[64];
        snprintf(control, sizeof control, "TICKET%02d", i);
        int32_t rc = hnapi_receive(c, tickets[i], UINT32_MAX, buf, sizeof buf, &len);
        CHECK(rc == HNET_RTRN_SUCCESS, "receive %d: %s", i, hnapi_code_name(rc));
        CHECK(strcmp(field(buf, len, "MSA", 2, f, sizeof f), control) == 0, "ticket %d got %s", i, f);
    }
    /* A pending ticket: PENDING, still valid. */
    char msg[512];
    int n = request(msg, sizeof msg, "HNSIM-NORESPONSE", "R03", "TICKETSLOW");
    uint64_t slow = 0;
    CHECK(hnapi_send(c, (const uint8_t *)msg, (size_t)n, 1000, &slow) == HNET_RTRN_SUCCESS, "send slow");
    size_t len = 4242;
    CHECK(hnapi_receive(c, slow, 0, buf, sizeof buf, &len) == HNET_RTRN_PENDING, "pending");
    CHECK(len == 4242, "*len is not written while pending");
    CHECK(hnapi_receive(c, slow, UINT32_MAX, buf, sizeof buf, &len) == HNET_RTRN_SUCCESS, "ends by its timeout");
    hnapi_client_close(c);
}

static atomic_int served;

static void *serve(void *arg) {
    HnapiServer *s = arg;
    unsigned char buf[4096];
    while (atomic_load(&served) < 3) {
        uint64_t id = 0;
        size_t len = 0;
        int32_t rc = hnapi_server_receive(s, 200, &id, buf, sizeof buf, &len);
        if (rc != HNET_RTRN_SUCCESS) {
            continue;
        }
        char control[64], answer[512];
        field(buf, len, "MSH", 10, control, sizeof control);
        int n = snprintf(answer, sizeof answer,
                         "MSH|^~\\&|HNAPI-DEMO|BC00000099|CTEST|BC00000098|20261123120000||ACK|S%s|D|2.3\r"
                         "MSA|AA|%s|HJMB001ISUCCESSFULLY COMPLETED\r",
                         control, control);
        if (hnapi_server_respond(s, id, (const uint8_t *)answer, (size_t)n) == HNET_RTRN_SUCCESS) {
            atomic_fetch_add(&served, 1);
        }
    }
    return NULL;
}

static void test_server_application(void) {
    HnapiServer *s = NULL;
    int32_t rc = hnapi_server_open(server_toml, &s);
    CHECK(rc == HNET_RTRN_SUCCESS, "%s: %s", hnapi_code_name(rc), last_error());
    pthread_t thread;
    pthread_create(&thread, NULL, serve, s);
    HnapiClient *c = open_client();
    unsigned char buf[4096];
    for (int i = 0; i < 3; i++) {
        char control[32], msg[512], f[64];
        snprintf(control, sizeof control, "TOAPP%d", i);
        int n = request(msg, sizeof msg, "HNAPI-DEMO", "R03", control);
        size_t len = 0;
        /* The server application may still be connecting: HNPS007E until it is. */
        for (int attempt = 0; attempt < 50; attempt++) {
            rc = hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 5000, buf, sizeof buf, &len);
            if (rc != HNET_RTRN_SUCCESS || strncmp(field(buf, len, "MSA", 3, f, sizeof f), "HNPS007E", 8) != 0) {
                break;
            }
            struct timespec pause = {0, 100000000};
            nanosleep(&pause, NULL);
        }
        CHECK(rc == HNET_RTRN_SUCCESS, "%s", hnapi_code_name(rc));
        CHECK(strcmp(field(buf, len, "MSH", 3, f, sizeof f), "HNAPI-DEMO") == 0, "from the C server: %s", f);
        CHECK(strcmp(field(buf, len, "MSA", 2, f, sizeof f), control) == 0, "MSA-2 %s", f);
    }
    pthread_join(thread, NULL);
    /* A request id never received: UNKNOWNREQUEST; an answer without MSH: INVALIDFORMATERROR. */
    CHECK(hnapi_server_respond(s, 424242, (const uint8_t *)"MSH|^~\\&|A\r", 11) == HNET_RTRN_UNKNOWNREQUEST, "unknown id");
    CHECK(hnapi_server_respond(s, 1, (const uint8_t *)"nonsense", 8) == HNET_RTRN_INVALIDFORMATERROR, "not HL7");
    hnapi_client_close(c);
    hnapi_server_close(s);
}

/* A server application whose answers are larger than any small buffer: it counts the
   requests it is handed, and takes each first into a buffer too small for it. */
static atomic_int big_requests;
static atomic_int big_stop;
static atomic_int big_failures;

static void *serve_big(void *arg) {
    HnapiServer *s = arg;
    static unsigned char request[4096];
    static char answer[16384];
    while (!atomic_load(&big_stop)) {
        uint64_t id = 4242;
        size_t len = 0;
        unsigned char tiny[8];
        int32_t rc = hnapi_server_receive(s, 100, &id, tiny, sizeof tiny, &len);
        if (rc == HNET_RTRN_PENDING) continue;
        /* BUFFERTOOSMALL: *len is the size needed, *request_id is not written, and the
           request is kept for the next call. */
        if (rc != HNET_RTRN_BUFFERTOOSMALL || id != 4242 || len <= sizeof tiny || len > sizeof request) {
            atomic_fetch_add(&big_failures, 1);
            continue;
        }
        size_t needed = len;
        rc = hnapi_server_receive(s, 0, &id, request, sizeof request, &len);
        if (rc != HNET_RTRN_SUCCESS || len != needed) {
            atomic_fetch_add(&big_failures, 1);
            continue;
        }
        atomic_fetch_add(&big_requests, 1);
        char control[64];
        field(request, len, "MSH", 10, control, sizeof control);
        int n = snprintf(answer, sizeof answer,
                         "MSH|^~\\&|HNAPI-DEMO|BC00000099|CTEST|BC00000098|20261124120000||ACK|S%s|D|2.3\r"
                         "MSA|AA|%s\rNTE|1||",
                         control, control);
        memset(answer + n, 'X', 10000);
        n += 10000;
        answer[n++] = '\r';
        if (hnapi_server_respond(s, id, (const uint8_t *)answer, (size_t)n) != HNET_RTRN_SUCCESS) {
            atomic_fetch_add(&big_failures, 1);
        }
    }
    return NULL;
}

/* hnapi_send_receive's BUFFERTOOSMALL keeps the answer: the same call again with a
   bigger buffer returns it, and the receiving application is handed the request once. */
static void test_retry_is_not_sent_again(void) {
    HnapiServer *s = NULL;
    int32_t rc = hnapi_server_open(server_toml, &s);
    CHECK(rc == HNET_RTRN_SUCCESS, "%s: %s", hnapi_code_name(rc), last_error());
    CHECK(hnapi_server_wait_connected(s, 10000) == HNET_RTRN_SUCCESS, "connected: %s", last_error());
    pthread_t thread;
    pthread_create(&thread, NULL, serve_big, s);
    HnapiClient *c = open_client();
    char msg[512];
    int n = request(msg, sizeof msg, "HNAPI-DEMO", "R03", "CRETRY1");
    unsigned char tiny[64];
    size_t needed = 0;
    rc = hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 10000, tiny, sizeof tiny, &needed);
    int too_small = rc == HNET_RTRN_BUFFERTOOSMALL;
    unsigned char *buf = malloc(needed + 1);
    size_t len = 0;
    int32_t again = too_small ? hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 10000, buf, needed, &len) : -1;
    struct timespec pause = {0, 300000000}; /* time for a second request to arrive, were it sent */
    nanosleep(&pause, NULL);
    atomic_store(&big_stop, 1);
    pthread_join(thread, NULL);
    hnapi_server_close(s);
    hnapi_client_close(c);
    char f[64];
    int answered = again == HNET_RTRN_SUCCESS && len == needed &&
                   strcmp(field(buf, len, "MSA", 2, f, sizeof f), "CRETRY1") == 0;
    free(buf);
    CHECK(too_small, "first call: %s", hnapi_code_name(rc));
    CHECK(needed > 10000, "needed %zu", needed);
    CHECK(answered, "the second call: %s, len %zu of %zu", hnapi_code_name(again), len, needed);
    CHECK(atomic_load(&big_failures) == 0, "%d server-side failures", atomic_load(&big_failures));
    CHECK(atomic_load(&big_requests) == 1, "the server application was handed the request %d times",
          atomic_load(&big_requests));
}

#ifdef _WIN32
/* The process's threads (a Toolhelp snapshot) and its open handles: Windows has no
   /proc/self. */
static int thread_count(void) {
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
    if (snap == INVALID_HANDLE_VALUE) return -1;
    int n = 0;
    THREADENTRY32 e;
    e.dwSize = sizeof e;
    for (BOOL more = Thread32First(snap, &e); more; more = Thread32Next(snap, &e)) {
        if (e.th32OwnerProcessID == GetCurrentProcessId()) n++;
    }
    CloseHandle(snap);
    return n;
}

static int open_files(void) {
    DWORD n = 0;
    return GetProcessHandleCount(GetCurrentProcess(), &n) ? (int)n : -1;
}
#else
/* The entries of a /proc/self folder: the process's threads or open files. */
static int entries(const char *folder) {
    DIR *d = opendir(folder);
    if (d == NULL) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] != '.') n++;
    }
    closedir(d);
    return n;
}

static int thread_count(void) { return entries("/proc/self/task"); }
static int open_files(void) { return entries("/proc/self/fd"); }
#endif

static void test_open_close_many(void) {
    int threads = thread_count(), files = open_files();
    double started = now_seconds();
    for (int i = 0; i < 1000; i++) {
        HnapiClient *c = NULL;
        int32_t rc = hnapi_client_open(client_toml, &c);
        CHECK(rc == HNET_RTRN_SUCCESS, "open %d: %s", i, hnapi_code_name(rc));
        hnapi_client_close(c);
    }
    /* Threads and open files are back where they were; LeakSanitizer checks at exit that
       no memory of the 1000 was kept. */
    int threads_after = thread_count(), files_after = open_files();
    printf("     1000 in %.1f s; threads %d -> %d, open files %d -> %d\n", now_seconds() - started, threads,
           threads_after, files, files_after);
    CHECK(threads_after <= threads, "threads %d -> %d", threads, threads_after);
    CHECK(files_after <= files, "open files %d -> %d", files, files_after);
}

static int32_t waiting_rc;

static void *wait_for_ticket(void *arg) {
    uint64_t ticket = *(uint64_t *)arg;
    unsigned char buf[256];
    size_t len = 0;
    waiting_rc = hnapi_receive(shared, ticket, UINT32_MAX, buf, sizeof buf, &len);
    return NULL;
}

static void test_shutdown_wakes_a_waiting_thread(void) {
    shared = open_client();
    char msg[512];
    int n = request(msg, sizeof msg, "HNSIM-NORESPONSE", "R03", "CSHUTDOWN1");
    uint64_t ticket = 0;
    CHECK(hnapi_send(shared, (const uint8_t *)msg, (size_t)n, 60000, &ticket) == HNET_RTRN_SUCCESS, "send");
    pthread_t thread;
    pthread_create(&thread, NULL, wait_for_ticket, &ticket);
    struct timespec pause = {0, 300000000};
    nanosleep(&pause, NULL);
    double started = now_seconds();
    hnapi_client_shutdown(shared);
    pthread_join(thread, NULL);
    CHECK(waiting_rc == HNET_RTRN_SHUTDOWN, "%s", hnapi_code_name(waiting_rc));
    CHECK(now_seconds() - started < 2.0, "woken at once");
    unsigned char buf[256];
    size_t len = 0;
    CHECK(hnapi_send_receive(shared, (const uint8_t *)msg, (size_t)n, 0, buf, sizeof buf, &len) == HNET_RTRN_SHUTDOWN, "later calls too");
    hnapi_client_close(shared);
}

static atomic_int log_lines;
static atomic_int log_phi;

static void on_log(int32_t level, const char *line, void *ctx) {
    (void)level;
    if (ctx == (void *)&log_lines) {
        atomic_fetch_add(&log_lines, 1);
    }
    if (strstr(line, "9029274643") != NULL) {
        atomic_fetch_add(&log_phi, 1);
    }
}

static void test_log_callback(void) {
    hnapi_set_log_callback(on_log, &log_lines, 3);
    HnapiClient *c = open_client();
    char msg[512];
    int n = request(msg, sizeof msg, "RAIEND-PYR-RL", "R35", "CLOG1");
    unsigned char buf[4096];
    size_t len = 0;
    CHECK(hnapi_send_receive(c, (const uint8_t *)msg, (size_t)n, 0, buf, sizeof buf, &len) == HNET_RTRN_SUCCESS, "send");
    hnapi_client_close(c);
    hnapi_set_log_callback(NULL, NULL, 0);
    CHECK(atomic_load(&log_lines) > 0, "the connection was logged");
    CHECK(atomic_load(&log_phi) == 0, "no PHI in the log");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CLIENT_TOML SERVER_TOML\n", argv[0]);
        return 2;
    }
    client_toml = argv[1];
    server_toml = argv[2];
    run("version and code names", test_version_and_codes);
    run("NULL parameters and the last error", test_null_parameters);
    run("buffer too small, then big enough", test_buffer_too_small_then_enough);
    run("input without MSH", test_input_without_msh);
    run("unreachable gateway: an AR from HNAPI", test_unreachable_gateway);
    run("HNSIM-NORESPONSE with timeout_ms 1000", test_timeout);
    run("16 threads x 100 on one client", test_sixteen_threads);
    run("50 tickets in flight", test_fifty_tickets);
    run("a C server application answering a C client", test_server_application);
    run("a retry after BUFFERTOOSMALL is not sent again", test_retry_is_not_sent_again);
    run("open and close 1000 times", test_open_close_many);
    run("shutdown wakes a thread waiting on the client", test_shutdown_wakes_a_waiting_thread);
    run("log callback, without PHI", test_log_callback);
    printf("%s\n", failures == 0 ? "all C ABI tests passed" : "C ABI tests FAILED");
    return failures == 0 ? 0 : 1;
}
