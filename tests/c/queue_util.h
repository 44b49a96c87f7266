/*
 * What the tests of non-blocking calls share: waiting on a queue's descriptor with poll(2)
 * and taking one completion at a time. Included after check.h.
 */
#ifndef POLYCACHE_TEST_QUEUE_UTIL_H
#define POLYCACHE_TEST_QUEUE_UTIL_H

#include "check.h"

#include <poll.h>

/* A bound for a failing test only: a passing one never waits for it. */
#define WAIT_MS 60000

static inline int readable(const polycache_queue *queue, int timeout_ms) {
    struct pollfd pfd = {polycache_queue_fd(queue), POLLIN, 0};
    return poll(&pfd, 1, timeout_ms) == 1 && (pfd.revents & POLLIN);
}

/* Waits for and takes exactly one completion. */
static inline int next(polycache_queue *queue, polycache_completion *c) {
    size_t count = 0;
    polycache_error *err = NULL;
    for (int waited = 0; waited < WAIT_MS; waited += 10) {
        CHECK_RC(polycache_queue_drain(queue, c, 1, &count, &err), POLYCACHE_RESULT_OK, err);
        if (count == 1) {
            return 1;
        }
        readable(queue, 10);
    }
    fprintf(stderr, "no completion within %d ms\n", WAIT_MS);
    return 0;
}

static inline void free_completion(polycache_completion *c) {
    polycache_value_free(c->value);
    polycache_error_free(c->error);
}

static inline void *tag(uintptr_t i) { return (void *)i; }

#endif
