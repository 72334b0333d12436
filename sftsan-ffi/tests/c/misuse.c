/*
 * misuse.c: the C ABI's answers to misuse, checked from C. Run by tests/misuse.rs (also
 * under valgrind) with the path of a valid spec of a cluster that is down:
 *
 *   misuse SPEC
 *
 * Prints each check; exits 1 at the first that fails, 0 after "misuse: all checks passed".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sftsan.h"

static int failures;

/* This thread's last error, in a static buffer. */
static const char *last_error(void)
{
    static char buf[1024];
    sftsan_last_error(buf, sizeof buf);
    return buf;
}

static void check(int ok, const char *what)
{
    printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok)
        failures++;
}

/* The call returned `want` and its message contains `needle`. */
static void expect(sftsan_result got, sftsan_result want, const char *needle, const char *what)
{
    const char *message = last_error();
    int ok = got == want && strstr(message, needle) != NULL;
    if (!ok)
        printf("      got %s (%s), want %s with \"%s\"\n", sftsan_result_name(got), message,
               sftsan_result_name(want), needle);
    check(ok, what);
}

static void *fail_on_another_thread(void *arg)
{
    char *seen = arg;
    strcpy(seen, last_error()); /* empty: nothing failed on this thread yet */
    sftsan_result r = sftsan_down(NULL);
    strcat(seen, r == SFTSAN_RESULT_NULL_ARGUMENT ? "|null" : "|other");
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SPEC\n", argv[0]);
        return 2;
    }
    sftsan_ctx *const sentinel_ctx = (sftsan_ctx *)0x5a5a;
    char *const sentinel = (char *)0x5a5a;
    sftsan_ctx *ctx = sentinel_ctx;
    char *out = sentinel;

    sftsan_ctx_free(NULL);
    sftsan_string_free(NULL);
    check(1, "freeing NULL does nothing");

    expect(sftsan_ctx_open_file(NULL, &ctx), SFTSAN_RESULT_NULL_ARGUMENT, "`path` is NULL",
           "open_file(NULL)");
    expect(sftsan_ctx_open_file(argv[1], NULL), SFTSAN_RESULT_NULL_ARGUMENT,
           "`ctx_out` is NULL", "open_file(spec, NULL)");
    expect(sftsan_ctx_open_file("\xff", &ctx), SFTSAN_RESULT_INVALID_UTF8, "not valid UTF-8",
           "open_file(invalid UTF-8)");
    expect(sftsan_ctx_open_file("/nonexistent/spec.toml", &ctx), SFTSAN_RESULT_NOT_FOUND,
           "cannot read the spec", "open_file(missing file)");
    expect(sftsan_ctx_open_toml("[cluster\n", &ctx), SFTSAN_RESULT_INVALID_SPEC, "spec line 1",
           "open_toml(broken TOML)");
    expect(sftsan_ctx_open_toml("[cluster]\nname = \"x\"\n", &ctx), SFTSAN_RESULT_INVALID_SPEC,
           "missing field", "open_toml(incomplete spec)");
    check(ctx == sentinel_ctx, "ctx_out untouched by failures");

    expect(sftsan_up(NULL), SFTSAN_RESULT_NULL_ARGUMENT, "`ctx` is NULL", "up(NULL)");
    expect(sftsan_status_json(NULL, &out), SFTSAN_RESULT_NULL_ARGUMENT, "`ctx` is NULL",
           "status_json(NULL, &out)");

    ctx = NULL;
    if (sftsan_ctx_open_file(argv[1], &ctx) != SFTSAN_RESULT_OK || ctx == NULL) {
        printf("FAIL: open_file(%s): %s\n", argv[1], last_error());
        return 1;
    }
    check(strcmp(last_error(), "") == 0, "a success clears the last error");

    expect(sftsan_plan_json(ctx, NULL), SFTSAN_RESULT_NULL_ARGUMENT, "`json_out` is NULL",
           "plan_json(ctx, NULL)");
    expect(sftsan_snapshot_create(ctx, NULL, 1, &out), SFTSAN_RESULT_NULL_ARGUMENT,
           "`node` is NULL", "snapshot_create(ctx, NULL, ...)");
    expect(sftsan_up_node(ctx, "\xff\xfe"), SFTSAN_RESULT_INVALID_UTF8, "`node` is not valid",
           "up_node(invalid UTF-8)");
    expect(sftsan_snapshot_path(ctx, "n1", 1, &out), SFTSAN_RESULT_NOT_UP, "is not up",
           "snapshot_path on a down cluster");
    expect(sftsan_verify_json(ctx, 1, &out), SFTSAN_RESULT_NOT_UP, "is not up",
           "verify_json on a down cluster");
    expect(sftsan_snapshot_path(ctx, "nope", 1, &out), SFTSAN_RESULT_NOT_FOUND,
           "no node named", "snapshot_path(unknown node)");
    expect(sftsan_snapshot_create(ctx, "origin", 1, &out), SFTSAN_RESULT_INVALID_ARGUMENT,
           "is the origin", "snapshot_create(origin)");
    check(out == sentinel, "outputs untouched by failures");

    /* The last error: snprintf-like length and cut, per thread. */
    expect(sftsan_down_node(ctx, NULL), SFTSAN_RESULT_NULL_ARGUMENT, "`node` is NULL",
           "down_node(ctx, NULL)");
    size_t full = sftsan_last_error(NULL, 0);
    char small[6];
    size_t n = sftsan_last_error(small, sizeof small);
    check(n == full && full == strlen("argument `node` is NULL"), "last_error returns the full length");
    check(strcmp(small, "argum") == 0, "last_error cuts to the buffer, NUL-terminated");
    char seen[256] = "";
    pthread_t thread;
    if (pthread_create(&thread, NULL, fail_on_another_thread, seen) != 0 ||
        pthread_join(thread, NULL) != 0) {
        printf("FAIL: pthread\n");
        return 1;
    }
    check(strcmp(seen, "|null") == 0, "another thread starts with no error of ours");
    check(strcmp(last_error(), "argument `node` is NULL") == 0,
          "another thread's failure leaves ours alone");

    /* What works on a down cluster. */
    if (sftsan_status_json(ctx, &out) == SFTSAN_RESULT_OK) {
        check(strstr(out, "\"state\": \"down\"") != NULL, "status_json: the nodes are down");
        sftsan_string_free(out);
    } else {
        check(0, "status_json on a down cluster");
    }
    check(strcmp(sftsan_result_name(SFTSAN_RESULT_NOT_UP), "SFTSAN_RESULT_NOT_UP") == 0,
          "result_name");
    check(strcmp(sftsan_result_name(999), "SFTSAN_RESULT_UNKNOWN") == 0, "result_name(999)");
    check(strlen(sftsan_version()) > 0, "version");

    sftsan_ctx_free(ctx);
    if (failures) {
        printf("misuse: %d checks failed\n", failures);
        return 1;
    }
    printf("misuse: all checks passed\n");
    return 0;
}
