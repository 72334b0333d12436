/*
 * cluster.c: drives a whole sftsan cluster through libsftsan: prints the plan, brings the
 * cluster up, prints its status, verifies every node's snapshot 1 against the image,
 * creates one extra VM snapshot on a node, removes it, and tears the cluster down. Every call's result is checked; a failure prints the library's
 * message and, once the cluster is (partly) up, takes it down again.
 *
 *   usage: cluster SPEC [NODE]      (NODE: where the extra snapshot goes; default: the
 *                                    first node after the origin)
 *
 * Build (from this directory, after `cargo build -p sftsan-ffi -p sftsan-cli`), or `make`:
 *   shared: gcc -std=c11 -Wall -Wextra -Wpedantic -I../../include -o cluster cluster.c \
 *               -L../../target/debug -lsftsan -Wl,-rpath,$PWD/../../target/debug
 *   static: gcc -std=c11 -Wall -Wextra -Wpedantic -I../../include -o cluster-static \
 *               cluster.c ../../target/debug/libsftsan.a \
 *               -ldevmapper -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
 * Run as root (local mode uses network namespaces), with the sftsan binary findable for
 * the cache keepers:
 *   SFTSAN_BIN=../../target/debug/sftsan ./cluster ../local-cluster.toml
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sftsan.h"

/* Prints what failed, the result's name and the library's message for it. */
static void report(const char *what, sftsan_result result)
{
    size_t len = sftsan_last_error(NULL, 0);
    char *message = malloc(len + 1);
    if (message == NULL) {
        fprintf(stderr, "cluster: %s failed: %s\n", what, sftsan_result_name(result));
        return;
    }
    sftsan_last_error(message, len + 1);
    fprintf(stderr, "cluster: %s failed: %s: %s\n", what, sftsan_result_name(result),
            message);
    free(message);
}

/* Progress of up/down/snapshot steps; sftsan calls it one step at a time. */
static void progress(void *userdata, const char *id, const char *action, double seconds,
                     bool rollback)
{
    unsigned *steps = userdata;
    ++*steps;
    fprintf(stderr, "  %-28s %-10s %6.2fs%s\n", id, action, seconds,
            rollback ? "  (rollback)" : "");
}

/* Prints a JSON document the library returned under a heading, then frees it. */
static void print_json(const char *heading, char *json)
{
    printf("%s:\n%s\n", heading, json);
    sftsan_string_free(json);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s SPEC [NODE]\n", argv[0]);
        return 2;
    }
    const char *spec = argv[1];
    int status = 1;
    int up = 0;
    unsigned steps = 0;
    sftsan_ctx *ctx = NULL;
    char *json = NULL;
    char *node = NULL;
    char *path = NULL;
    sftsan_result r;

    printf("libsftsan %s\n", sftsan_version());

    if ((r = sftsan_ctx_open_file(spec, &ctx)) != SFTSAN_RESULT_OK) {
        report("opening the spec", r);
        return 1;
    }
    if ((r = sftsan_ctx_set_progress(ctx, progress, &steps)) != SFTSAN_RESULT_OK) {
        report("setting the progress callback", r);
        goto out;
    }
    if ((r = sftsan_plan_json(ctx, &json)) != SFTSAN_RESULT_OK) {
        report("plan", r);
        goto out;
    }
    print_json("plan", json);

    if (argc == 3) {
        node = malloc(strlen(argv[2]) + 1);
        if (node == NULL)
            goto out;
        strcpy(node, argv[2]);
    } else if ((r = sftsan_node_name(ctx, 2, &node)) != SFTSAN_RESULT_OK) {
        report("finding the first node", r);
        goto out;
    }

    /* Before `up`, a call that needs the node up says so. */
    r = sftsan_snapshot_path(ctx, node, 1, &path);
    if (r == SFTSAN_RESULT_NOT_UP) {
        printf("before up: snapshot_path(%s, 1) -> %s, as expected\n", node,
               sftsan_result_name(r));
    } else if (r == SFTSAN_RESULT_OK) {
        printf("before up: %s is up already (snapshot 1: %s)\n", node, path);
        sftsan_string_free(path);
        path = NULL;
    } else {
        report("snapshot_path before up", r);
        goto out;
    }

    fprintf(stderr, "cluster: up\n");
    up = 1; /* from here on, a failure takes the cluster down */
    if ((r = sftsan_up(ctx)) != SFTSAN_RESULT_OK) {
        report("up", r);
        goto out;
    }
    printf("up: ok (%u steps)\n", steps);

    if ((r = sftsan_status_json(ctx, &json)) != SFTSAN_RESULT_OK) {
        report("status", r);
        goto out;
    }
    print_json("status", json);

    /* Every node reads its snapshot 1 through its cache; compared with the image. */
    if ((r = sftsan_verify_json(ctx, 1, &json)) != SFTSAN_RESULT_OK) {
        report("verify", r);
        goto out;
    }
    print_json("verify", json);

    /* The first snapshot index the node does not have yet. */
    uint32_t index = 1;
    for (;;) {
        r = sftsan_snapshot_path(ctx, node, index, &path);
        if (r == SFTSAN_RESULT_NOT_FOUND)
            break;
        if (r != SFTSAN_RESULT_OK) {
            report("snapshot_path", r);
            goto out;
        }
        printf("existing: %s snapshot %u: %s\n", node, (unsigned)index, path);
        sftsan_string_free(path);
        path = NULL;
        ++index;
    }

    if ((r = sftsan_snapshot_create(ctx, node, index, &path)) != SFTSAN_RESULT_OK) {
        report("snapshot_create", r);
        goto out;
    }
    printf("snapshot: %s %u %s\n", node, (unsigned)index, path);
    sftsan_string_free(path);
    path = NULL;

    bool existed = false;
    if ((r = sftsan_snapshot_remove(ctx, node, index, &existed)) != SFTSAN_RESULT_OK) {
        report("snapshot_remove", r);
        goto out;
    }
    printf("removed: %s %u (existed: %s)\n", node, (unsigned)index, existed ? "yes" : "no");
    status = 0;

out:
    if (up) {
        fprintf(stderr, "cluster: down\n");
        if ((r = sftsan_down(ctx)) != SFTSAN_RESULT_OK) {
            report("down", r);
            status = 1;
        } else {
            printf("down: ok\n");
        }
    }
    free(node);
    sftsan_ctx_free(ctx);
    return status;
}
