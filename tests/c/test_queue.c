/*
 * Tests of the non-blocking calls (polycache_cache_<op>_start) and their completion queue
 * (polycache_queue): every call, inline completion on memory://, NULL parameters, a dead
 * server, freeing the cache and the queue with operations in flight, threads starting
 * operations on one queue, and an epoll loop keeping 256 operations in flight against
 * Redis and Memcached.
 *
 * tests/c/run.sh runs it under valgrind and AddressSanitizer + UBSan, and tests/c/tsan.sh
 * under ThreadSanitizer, each time through testkit's `with-servers`, which starts a Redis and
 * a Memcached on free loopback ports and passes their URLs in POLYCACHE_TEST_REDIS_URL and
 * POLYCACHE_TEST_MEMCACHED_URL. Usage: test_queue [OPS]  (operations of the epoll loop per
 * server, default 2048).
 */

#include "check.h"
#include "queue_util.h"

#include <sys/epoll.h>
#include <unistd.h>

/* memory:// completes inline: the completion is queued when the start call returns. */
static void test_every_call_inline(void) {
    polycache_cache *cache = open_cache("memory://?max_value_size=16");
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    polycache_completion c;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_queue_fd(queue) >= 0);
    CHECK(!readable(queue, 0));
    CHECK(polycache_queue_pending(queue) == 0);

    CHECK_RC(polycache_cache_get_start(cache, queue, "k", tag(1), &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_queue_pending(queue) == 1);
    CHECK(readable(queue, 0));
    size_t count = 99;
    CHECK_RC(polycache_queue_drain(queue, &c, 1, &count, &err), POLYCACHE_RESULT_OK, err);
    CHECK(count == 1);
    CHECK(c.user_data == tag(1) && c.op == POLYCACHE_OP_GET && c.result == POLYCACHE_RESULT_MISS);
    CHECK(c.value == NULL && c.error == NULL);
    CHECK(!readable(queue, 0));
    CHECK(polycache_queue_pending(queue) == 0);

    CHECK_RC(polycache_cache_set_start(cache, queue, "k", (const uint8_t *)"v\0w", 3, POLYCACHE_TTL_NEVER, tag(2),
                                       &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.user_data == tag(2) && c.op == POLYCACHE_OP_SET && c.result == POLYCACHE_RESULT_OK);
    CHECK(c.error == NULL);
    CHECK(holds(cache, "k", "v\0w", 3));

    CHECK_RC(polycache_cache_get_start(cache, queue, "k", tag(3), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK && c.value != NULL);
    CHECK(polycache_value_len(c.value) == 3 && memcmp(polycache_value_data(c.value), "v\0w", 3) == 0);
    free_completion(&c);

    /* An empty value, NULL data. */
    CHECK_RC(polycache_cache_set_start(cache, queue, "empty", NULL, 0, POLYCACHE_TTL_NEVER, NULL, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK && c.user_data == NULL);

    /* The operation's own failures arrive as completions with an error. */
    CHECK_RC(polycache_cache_set_start(cache, queue, "big", (const uint8_t *)"0123456789abcdefXYZ", 19,
                                       POLYCACHE_TTL_NEVER, tag(4), &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_VALUE_TOO_LARGE && c.error != NULL);
    CHECK(polycache_error_result(c.error) == POLYCACHE_RESULT_VALUE_TOO_LARGE);
    free_completion(&c);
    CHECK(is_miss(cache, "big"));

    CHECK(set_str(cache, "n", "41", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_incr_start(cache, queue, "n", 1, tag(5), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_INCR && c.result == POLYCACHE_RESULT_OK && c.integer == 42);
    CHECK_RC(polycache_cache_incr_start(cache, queue, "n", -50, tag(6), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK && c.integer == -8);
    CHECK_RC(polycache_cache_incr_start(cache, queue, "absent", 1, tag(7), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_NOT_FOUND && c.integer == 0);
    CHECK(c.error != NULL && strstr(polycache_error_message(c.error), "absent") != NULL);
    free_completion(&c);
    CHECK_RC(polycache_cache_incr_start(cache, queue, "k", 1, tag(8), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_NOT_AN_INTEGER);
    free_completion(&c);

    CHECK_RC(polycache_cache_delete_start(cache, queue, "n", tag(9), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_DELETE && c.result == POLYCACHE_RESULT_OK && c.deleted);
    CHECK_RC(polycache_cache_delete_start(cache, queue, "n", tag(10), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK && !c.deleted);
    CHECK(is_miss(cache, "n"));

    const char *keys[] = {"a", "b", "c"};
    const uint8_t *datas[] = {(const uint8_t *)"1", (const uint8_t *)"22", (const uint8_t *)"333"};
    const size_t lens[] = {1, 2, 3};
    CHECK_RC(polycache_cache_set_many_start(cache, queue, keys, datas, lens, 2, POLYCACHE_TTL_NEVER, tag(11), &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_SET_MANY && c.result == POLYCACHE_RESULT_OK);
    polycache_value *values[3] = {NULL, NULL, (polycache_value *)&err};
    CHECK_RC(polycache_cache_get_many_start(cache, queue, keys, 3, values, tag(12), &err), POLYCACHE_RESULT_OK, err);
    /* The array is written only when the completion is drained. */
    CHECK(values[2] == (polycache_value *)&err);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_GET_MANY && c.result == POLYCACHE_RESULT_OK);
    CHECK(values[0] != NULL && polycache_value_len(values[0]) == 1);
    CHECK(values[1] != NULL && memcmp(polycache_value_data(values[1]), "22", 2) == 0);
    CHECK(values[2] == NULL);
    polycache_value_free(values[0]);
    polycache_value_free(values[1]);
    /* n == 0: NULL arrays are fine. */
    CHECK_RC(polycache_cache_get_many_start(cache, queue, NULL, 0, NULL, tag(13), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK);
    CHECK_RC(polycache_cache_set_many_start(cache, queue, NULL, NULL, NULL, 0, POLYCACHE_TTL_NEVER, tag(14), &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK);
    /* An oversized value in set_many stores nothing. */
    const uint8_t *big[] = {(const uint8_t *)"x", (const uint8_t *)"0123456789abcdefXYZ"};
    const size_t big_lens[] = {1, 19};
    const char *big_keys[] = {"x1", "x2"};
    CHECK_RC(polycache_cache_set_many_start(cache, queue, big_keys, big, big_lens, 2, POLYCACHE_TTL_NEVER, tag(15),
                                            &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_VALUE_TOO_LARGE && c.error != NULL);
    free_completion(&c);
    CHECK(is_miss(cache, "x1"));

    /* Batches: a partial drain keeps the rest, and the descriptor readable, in order. */
    for (uintptr_t i = 0; i < 5; i++) {
        CHECK_RC(polycache_cache_delete_start(cache, queue, "a", tag(100 + i), &err), POLYCACHE_RESULT_OK, err);
    }
    polycache_completion batch[2];
    CHECK_RC(polycache_queue_drain(queue, batch, 2, &count, &err), POLYCACHE_RESULT_OK, err);
    CHECK(count == 2 && batch[0].user_data == tag(100) && batch[1].user_data == tag(101));
    CHECK(batch[0].deleted && !batch[1].deleted);
    CHECK(readable(queue, 0) && polycache_queue_pending(queue) == 3);
    CHECK_RC(polycache_queue_drain(queue, NULL, 0, &count, &err), POLYCACHE_RESULT_OK, err);
    CHECK(count == 0 && readable(queue, 0));
    polycache_completion rest[8];
    CHECK_RC(polycache_queue_drain(queue, rest, 8, &count, &err), POLYCACHE_RESULT_OK, err);
    CHECK(count == 3 && rest[2].user_data == tag(104));
    CHECK(!readable(queue, 0) && polycache_queue_pending(queue) == 0);
    CHECK_RC(polycache_queue_drain(queue, rest, 8, &count, &err), POLYCACHE_RESULT_OK, err);
    CHECK(count == 0);

    /* Completions never drained are freed with the queue (valgrind and ASan check). */
    CHECK_RC(polycache_cache_get_start(cache, queue, "b", NULL, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_incr_start(cache, queue, "b", 1, NULL, &err), POLYCACHE_RESULT_OK, err);
    polycache_queue_free(queue);
    polycache_queue_free(NULL);
    polycache_cache_free(cache);
}

/* ttl and incr_or_create, started: inline on memory://, through the runtime on a server. */
static void test_lifetime_starts(const char *url) {
    polycache_cache *cache = open_cache(url);
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    polycache_completion c;
    bool flag = false;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_delete(cache, "life", &flag, &err), POLYCACHE_RESULT_OK, err);

    CHECK_RC(polycache_cache_ttl_start(cache, queue, "life", tag(1), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_TTL && c.result == POLYCACHE_RESULT_MISS && c.integer == 0);
    CHECK_RC(polycache_cache_incr_or_create_start(cache, queue, "life", 5, tag(2), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_INCR_OR_CREATE && c.result == POLYCACHE_RESULT_OK);
    CHECK(c.user_data == tag(2) && c.integer == 5);
    CHECK_RC(polycache_cache_ttl_start(cache, queue, "life", tag(3), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK && c.integer == POLYCACHE_TTL_NEVER);
    CHECK_RC(polycache_cache_touch(cache, "life", 600000, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_ttl_start(cache, queue, "life", tag(4), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK && c.integer > 0 && c.integer <= 600000);
    CHECK_RC(polycache_cache_incr_or_create_start(cache, queue, "life", 1, tag(5), &err), POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK && c.integer == 6);
    CHECK_ERR(polycache_cache_ttl_start(cache, queue, NULL, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "key");
    CHECK_ERR(polycache_cache_incr_or_create_start(cache, NULL, "k", 1, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER,
              err, "queue");
    CHECK(polycache_queue_pending(queue) == 0);
    CHECK_RC(polycache_cache_delete(cache, "life", &flag, &err), POLYCACHE_RESULT_OK, err);
    polycache_queue_free(queue);
    polycache_cache_free(cache);
}

/* NULL and non-UTF-8 arguments: the start call fails and queues nothing. */
static void test_null_parameters(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    const char *keys[] = {"a", NULL};
    const uint8_t *datas[] = {(const uint8_t *)"1", NULL};
    const size_t lens[] = {1, 1};
    polycache_value *values[2];
    polycache_completion c;
    size_t count = 0;
    CHECK_ERR(polycache_queue_new(NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "queue_out");
    CHECK_RC(polycache_queue_new(&queue, NULL), POLYCACHE_RESULT_OK, err);

    CHECK_ERR(polycache_cache_get_start(NULL, queue, "k", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "cache");
    CHECK_ERR(polycache_cache_get_start(cache, NULL, "k", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "queue");
    CHECK_ERR(polycache_cache_get_start(cache, queue, NULL, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "key");
    CHECK_ERR(polycache_cache_get_start(cache, queue, "\xff", NULL, &err), POLYCACHE_RESULT_INVALID_UTF8, err, "key");
    CHECK_ERR(polycache_cache_set_start(cache, queue, NULL, (const uint8_t *)"v", 1, 1000, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "key");
    CHECK_ERR(polycache_cache_set_start(cache, queue, "k", NULL, 1, 1000, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER,
              err, "value");
    CHECK_ERR(polycache_cache_set_start(NULL, queue, "k", NULL, 0, 1000, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER,
              err, "cache");
    CHECK_ERR(polycache_cache_delete_start(cache, queue, NULL, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "key");
    CHECK_ERR(polycache_cache_delete_start(cache, NULL, "k", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err,
              "queue");
    CHECK_ERR(polycache_cache_incr_start(cache, queue, NULL, 1, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err,
              "key");
    CHECK_ERR(polycache_cache_incr_start(NULL, queue, "k", 1, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err,
              "cache");
    CHECK_ERR(polycache_cache_get_many_start(cache, queue, NULL, 1, values, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "keys");
    CHECK_ERR(polycache_cache_get_many_start(cache, queue, keys, 2, values, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "keys[i]");
    CHECK_ERR(polycache_cache_get_many_start(cache, queue, keys, 1, NULL, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "values_out");
    CHECK_ERR(polycache_cache_set_many_start(cache, queue, keys, datas, lens, 2, 1000, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "keys[i]");
    keys[1] = "b";
    CHECK_ERR(polycache_cache_set_many_start(cache, queue, keys, datas, lens, 2, 1000, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "values[i]");
    CHECK_ERR(polycache_cache_set_many_start(cache, queue, keys, datas, NULL, 1, 1000, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "lens");
    CHECK_ERR(polycache_cache_set_many_start(cache, queue, keys, NULL, lens, 1, 1000, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "values");
    /* error_out may be NULL. */
    CHECK(polycache_cache_get_start(cache, queue, NULL, NULL, NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_queue_pending(queue) == 0 && !readable(queue, 0));

    CHECK_ERR(polycache_queue_drain(NULL, &c, 1, &count, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "queue");
    CHECK_ERR(polycache_queue_drain(queue, NULL, 1, &count, &err), POLYCACHE_RESULT_NULL_PARAMETER, err,
              "completions_out");
    CHECK_ERR(polycache_queue_drain(queue, &c, 1, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "count_out");
    CHECK(polycache_queue_fd(NULL) == -1);
    CHECK(polycache_queue_pending(NULL) == 0);
    polycache_queue_free(queue);
    polycache_cache_free(cache);
}

/* A server that is not there: the error arrives through the queue, never a hang. The codes
 * are those of the blocking calls (a fail_open cache answers a miss, drops a set, and
 * reports the pairs of a set_many it did not store). */
static void test_dead_server(const char *url, polycache_result get_rc, polycache_result set_rc,
                             polycache_result set_many_rc) {
    polycache_cache *cache = open_cache(url);
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    polycache_completion c;
    polycache_value *values[1] = {NULL};
    const char *keys[] = {"k"};
    const uint8_t *datas[] = {(const uint8_t *)"v"};
    const size_t lens[] = {1};
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_get_start(cache, queue, "k", tag(1), &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_set_start(cache, queue, "k", (const uint8_t *)"v", 1, 1000, tag(2), &err),
             POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_get_many_start(cache, queue, keys, 1, values, tag(3), &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_set_many_start(cache, queue, keys, datas, lens, 1, 1000, tag(4), &err),
             POLYCACHE_RESULT_OK, err);
    int seen = 0;
    for (int i = 0; i < 4; i++) {
        if (!next(queue, &c)) {
            CHECK(0);
            break;
        }
        if (c.user_data == tag(1)) {
            CHECK(c.result == get_rc && c.value == NULL);
        } else if (c.user_data == tag(2)) {
            CHECK(c.result == set_rc);
        } else if (c.user_data == tag(3)) {
            CHECK(c.result == (get_rc == POLYCACHE_RESULT_MISS ? POLYCACHE_RESULT_OK : get_rc));
        } else {
            CHECK(c.user_data == tag(4) && c.result == set_many_rc);
        }
        if (c.result == POLYCACHE_RESULT_CONNECTION) {
            CHECK(c.error != NULL && polycache_error_result(c.error) == POLYCACHE_RESULT_CONNECTION);
            CHECK(strlen(polycache_error_backend_message(c.error)) > 0);
        } else if (c.result != POLYCACHE_RESULT_OK && c.result != POLYCACHE_RESULT_MISS &&
                   c.result != POLYCACHE_RESULT_NOT_STORED) {
            CHECK(c.error != NULL && polycache_error_result(c.error) == c.result);
        } else {
            CHECK(c.error == NULL);
        }
        seen |= 1 << (int)((uintptr_t)c.user_data - 1);
        free_completion(&c);
    }
    CHECK(seen == 15);
    CHECK(values[0] == NULL);
    CHECK(polycache_queue_pending(queue) == 0);
    polycache_queue_free(queue);
    polycache_cache_free(cache);
}

/* A custom backend whose get waits at a gate the test opens, so that operations stay in
 * flight while the test frees their cache or their queue. The gate is static and every
 * field is used under its lock, so that ThreadSanitizer sees the ordering between the test
 * and the runtime threads that call the callbacks (the library's own is invisible to it). */
static struct gate {
    pthread_mutex_t lock;
    pthread_cond_t opened_cond;
    int opened;
    int entered;
    int returned;
    int released;
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};

static polycache_result gated_get(void *ud, const uint8_t *key, size_t len, polycache_loader_output *out) {
    (void)ud;
    (void)key;
    (void)len;
    pthread_mutex_lock(&gate.lock);
    gate.entered++;
    while (!gate.opened) {
        pthread_cond_wait(&gate.opened_cond, &gate.lock);
    }
    pthread_mutex_unlock(&gate.lock);
    polycache_result rc = polycache_loader_output_set(out, (const uint8_t *)"gated", 5, NULL);
    pthread_mutex_lock(&gate.lock);
    gate.returned++;
    pthread_mutex_unlock(&gate.lock);
    return rc;
}

static polycache_result gated_set(void *ud, const uint8_t *key, size_t len, const uint8_t *v, size_t n,
                                  int64_t ttl_ms) {
    (void)ud, (void)key, (void)len, (void)v, (void)n, (void)ttl_ms;
    return POLYCACHE_RESULT_OK;
}

static polycache_result gated_remove(void *ud, const uint8_t *key, size_t len, bool *removed_out) {
    (void)ud, (void)key, (void)len;
    *removed_out = false;
    return POLYCACHE_RESULT_OK;
}

static void gated_release(void *ud) {
    (void)ud;
    pthread_mutex_lock(&gate.lock);
    gate.released++;
    pthread_mutex_unlock(&gate.lock);
}

static int gate_count(const int *field) {
    pthread_mutex_lock(&gate.lock);
    int n = *field;
    pthread_mutex_unlock(&gate.lock);
    return n;
}

struct gate_wait {
    const int *field;
    int want;
};

static int gate_reached(void *arg) {
    struct gate_wait *w = arg;
    return gate_count(w->field) >= w->want;
}

static void gate_open(void) {
    pthread_mutex_lock(&gate.lock);
    gate.opened = 1;
    pthread_cond_broadcast(&gate.opened_cond);
    pthread_mutex_unlock(&gate.lock);
}

/* A cache over the gated backend, with the gate closed and its counters at 0. */
static polycache_cache *open_gated(void) {
    pthread_mutex_lock(&gate.lock);
    gate.opened = gate.entered = gate.returned = gate.released = 0;
    pthread_mutex_unlock(&gate.lock);
    polycache_backend_vtable vtable = {0};
    vtable.get = gated_get;
    vtable.set = gated_set;
    vtable.remove = gated_remove;
    vtable.release = gated_release;
    polycache_cache *cache = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_cache_open_custom(&vtable, NULL, NULL, &cache, &err), POLYCACHE_RESULT_OK, err);
    return cache;
}

#define IN_FLIGHT 8

/* A new queue with IN_FLIGHT gets (user_data 1..IN_FLIGHT) and a get_many of two keys into
 * `values` (user_data 99) in flight on a gated cache, the first of them at the gate. */
static polycache_queue *start_in_flight(polycache_cache *cache, polycache_value **values) {
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    for (uintptr_t i = 0; i < IN_FLIGHT; i++) {
        CHECK_RC(polycache_cache_get_start(cache, queue, "k", tag(i + 1), &err), POLYCACHE_RESULT_OK, err);
    }
    const char *keys[] = {"a", "b"};
    CHECK_RC(polycache_cache_get_many_start(cache, queue, keys, 2, values, tag(99), &err), POLYCACHE_RESULT_OK, err);
    struct gate_wait entered = {&gate.entered, 1};
    CHECK(wait_until(gate_reached, &entered, WAIT_MS));
    return queue;
}

/* Freeing the cache with operations in flight: they finish and are delivered; the backend
 * is released after the last of them. */
static void test_free_cache_in_flight(void) {
    polycache_cache *cache = open_gated();
    polycache_value **values = calloc(2, sizeof *values);
    polycache_queue *queue = start_in_flight(cache, values);
    polycache_cache_free(cache);
    CHECK(gate_count(&gate.released) == 0);
    CHECK(polycache_queue_pending(queue) == IN_FLIGHT + 1);
    gate_open();
    int got = 0;
    polycache_completion c;
    for (int i = 0; i < IN_FLIGHT + 1 && next(queue, &c); i++) {
        if (c.op == POLYCACHE_OP_GET_MANY) {
            CHECK(c.user_data == tag(99) && c.result == POLYCACHE_RESULT_OK);
            CHECK(values[0] != NULL && values[1] != NULL && polycache_value_len(values[1]) == 5);
            polycache_value_free(values[0]);
            polycache_value_free(values[1]);
        } else {
            CHECK(c.result == POLYCACHE_RESULT_OK && polycache_value_len(c.value) == 5);
            CHECK(memcmp(polycache_value_data(c.value), "gated", 5) == 0);
        }
        free_completion(&c);
        got++;
    }
    CHECK(got == IN_FLIGHT + 1);
    free(values);
    struct gate_wait released = {&gate.released, 1};
    CHECK(wait_until(gate_reached, &released, WAIT_MS));
    CHECK(gate_count(&gate.released) == 1);
    polycache_queue_free(queue);
}

/* Freeing the queue (and the get_many array, and the cache) with operations in flight:
 * they finish and their completions are dropped; nothing is written, nothing leaks. */
static void test_free_queue_in_flight(void) {
    polycache_cache *cache = open_gated();
    polycache_value **values = calloc(2, sizeof *values);
    polycache_queue *queue = start_in_flight(cache, values);
    polycache_queue_free(queue);
    /* A use after free of the array would be reported by ASan and valgrind. */
    free(values);
    polycache_cache_free(cache);
    gate_open();
    struct gate_wait returned = {&gate.returned, IN_FLIGHT + 2};
    CHECK(wait_until(gate_reached, &returned, WAIT_MS));
    /* The backend is released once the operations holding it are gone. */
    struct gate_wait released = {&gate.released, 1};
    CHECK(wait_until(gate_reached, &released, WAIT_MS));
}

/* Threads starting operations on one queue while the main thread drains it. */
#define STARTERS 4

struct starter {
    polycache_cache *cache;
    polycache_queue *queue;
    int id;
    int ops;
};

static void *start_many(void *arg) {
    struct starter *s = arg;
    char key[32];
    for (int i = 0; i < s->ops; i++) {
        snprintf(key, sizeof key, "t%d:%d", s->id, i % 16);
        polycache_result rc;
        if (i % 2 == 0) {
            rc = polycache_cache_set_start(s->cache, s->queue, key, (const uint8_t *)key, strlen(key),
                                           POLYCACHE_TTL_NEVER, tag((uintptr_t)s->id), NULL);
        } else {
            rc = polycache_cache_get_start(s->cache, s->queue, key, tag((uintptr_t)s->id), NULL);
        }
        if (rc != POLYCACHE_RESULT_OK) {
            return tag(1);
        }
    }
    return NULL;
}

static void test_threads_share_a_queue(const char *url, int ops) {
    polycache_cache *cache = open_cache(url);
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    pthread_t threads[STARTERS];
    struct starter starters[STARTERS];
    for (int t = 0; t < STARTERS; t++) {
        starters[t] = (struct starter){cache, queue, t, ops};
        pthread_create(&threads[t], NULL, start_many, &starters[t]);
    }
    int done = 0, bad = 0;
    polycache_completion batch[32];
    for (int waited = 0; done < STARTERS * ops && waited < WAIT_MS;) {
        size_t count = 0;
        polycache_queue_drain(queue, batch, 32, &count, NULL);
        for (size_t i = 0; i < count; i++) {
            polycache_completion *c = &batch[i];
            if (c->op == POLYCACHE_OP_GET && c->result == POLYCACHE_RESULT_OK) {
                /* A value set by the same thread under its own key: it starts with "t<id>:". */
                char prefix[8];
                snprintf(prefix, sizeof prefix, "t%d:", (int)(uintptr_t)c->user_data);
                bad += polycache_value_len(c->value) < strlen(prefix) ||
                       memcmp(polycache_value_data(c->value), prefix, strlen(prefix)) != 0;
            } else if (c->result != POLYCACHE_RESULT_OK && c->result != POLYCACHE_RESULT_MISS) {
                bad++;
            }
            free_completion(c);
        }
        done += (int)count;
        if (count == 0 && !readable(queue, 10)) {
            waited += 10;
        }
    }
    for (int t = 0; t < STARTERS; t++) {
        void *outcome = NULL;
        pthread_join(threads[t], &outcome);
        CHECK(outcome == NULL);
    }
    CHECK(done == STARTERS * ops);
    CHECK(bad == 0);
    CHECK(polycache_queue_pending(queue) == 0);
    polycache_queue_free(queue);
    polycache_cache_free(cache);
}

/* The URL of a test server with `options`, and socket timeouts long enough for a slow run
 * under valgrind (they bound a failing test; a passing one never waits for them). */
static const char *server_url(char *url, size_t cap, const char *base, const char *options) {
    snprintf(url, cap, "%s%s%s&socket_timeout=60&connect_timeout=60", base, strchr(base, '?') ? "&" : "?",
             options);
    return url;
}

/* An epoll loop keeping 256 operations in flight: per key i, set "v<i>", then get it back,
 * then incr a shared counter, then delete; plus one get_many per 64 keys at the end.
 * Checks every value and the counter's exact total. */
#define WINDOW 256

struct slot {
    int key;
    int stage; /* 0 set, 1 get, 2 incr, 3 delete, 4 done */
};

static int start_stage(polycache_cache *cache, polycache_queue *queue, struct slot *s, const char *prefix) {
    char key[64], value[64];
    snprintf(key, sizeof key, "%s:%d", prefix, s->key);
    snprintf(value, sizeof value, "v%d", s->key);
    switch (s->stage) {
    case 0:
        return polycache_cache_set_start(cache, queue, key, (const uint8_t *)value, strlen(value), 600000, s, NULL) ==
               POLYCACHE_RESULT_OK;
    case 1:
        return polycache_cache_get_start(cache, queue, key, s, NULL) == POLYCACHE_RESULT_OK;
    case 2:
        snprintf(key, sizeof key, "%s:counter", prefix);
        return polycache_cache_incr_start(cache, queue, key, 1, s, NULL) == POLYCACHE_RESULT_OK;
    default:
        return polycache_cache_delete_start(cache, queue, key, s, NULL) == POLYCACHE_RESULT_OK;
    }
}

static void test_epoll_loop(const char *env, int ops) {
    const char *base = getenv(env);
    if (base == NULL) {
        fprintf(stderr, "%s is not set: run this test through tests/c/run.sh, which starts the servers\n", env);
        CHECK(base != NULL);
        return;
    }
    char url[256];
    polycache_cache *cache = open_cache(server_url(url, sizeof url, base, "key_prefix=epoll&timeout=600"));
    polycache_error *err = NULL;
    polycache_queue *queue = NULL;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    const char *prefix = env;
    char counter[96];
    snprintf(counter, sizeof counter, "%s:counter", prefix);
    CHECK(set_str(cache, counter, "0", POLYCACHE_TTL_NEVER));

    int epfd = epoll_create1(0);
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    ev.data.ptr = queue;
    CHECK(epfd >= 0 && epoll_ctl(epfd, EPOLL_CTL_ADD, polycache_queue_fd(queue), &ev) == 0);

    int keys = ops / 4;
    struct slot *slots = calloc((size_t)keys, sizeof *slots);
    int next_key = 0, finished = 0, wrong = 0, failures = 0, max_in_flight = 0;
    int64_t last_counter = 0;
    while (finished < keys) {
        while (next_key < keys && (int)polycache_queue_pending(queue) < WINDOW) {
            slots[next_key].key = next_key;
            if (!start_stage(cache, queue, &slots[next_key], prefix)) {
                failures++;
            }
            next_key++;
        }
        if ((int)polycache_queue_pending(queue) > max_in_flight) {
            max_in_flight = (int)polycache_queue_pending(queue);
        }
        struct epoll_event out;
        int n = epoll_wait(epfd, &out, 1, WAIT_MS);
        if (n != 1) {
            fprintf(stderr, "epoll_wait: no completion within %d ms\n", WAIT_MS);
            CHECK(n == 1);
            break;
        }
        polycache_completion batch[64];
        size_t count = 0;
        CHECK_RC(polycache_queue_drain(queue, batch, 64, &count, &err), POLYCACHE_RESULT_OK, err);
        for (size_t i = 0; i < count; i++) {
            polycache_completion *c = &batch[i];
            struct slot *s = c->user_data;
            if (c->result != POLYCACHE_RESULT_OK) {
                fprintf(stderr, "key %d stage %d: %s %s\n", s->key, s->stage, polycache_result_name(c->result),
                        polycache_error_message(c->error));
                failures++;
                finished++;
                free_completion(c);
                continue;
            }
            if (s->stage == 1) {
                char want[64];
                snprintf(want, sizeof want, "v%d", s->key);
                wrong += polycache_value_len(c->value) != strlen(want) ||
                         memcmp(polycache_value_data(c->value), want, strlen(want)) != 0;
            } else if (s->stage == 2 && c->integer > last_counter) {
                last_counter = c->integer;
            } else if (s->stage == 3) {
                wrong += !c->deleted;
            }
            free_completion(c);
            if (++s->stage == 4) {
                finished++;
            } else if (!start_stage(cache, queue, s, prefix)) {
                failures++;
                finished++;
            }
        }
    }
    CHECK(failures == 0);
    CHECK(wrong == 0);
    CHECK(last_counter == keys);
    CHECK(max_in_flight >= WINDOW);
    int64_t total = 0;
    CHECK_RC(polycache_cache_incr(cache, counter, 0, &total, &err), POLYCACHE_RESULT_OK, err);
    CHECK(total == keys);

    /* set_many then get_many, through the loop. */
    const char *many_keys[64];
    const uint8_t *datas[64];
    size_t lens[64];
    char names[64][16];
    for (int i = 0; i < 64; i++) {
        snprintf(names[i], sizeof names[i], "m%d", i);
        many_keys[i] = names[i];
        datas[i] = (const uint8_t *)names[i];
        lens[i] = strlen(names[i]);
    }
    polycache_value *values[65];
    polycache_completion c;
    CHECK_RC(polycache_cache_set_many_start(cache, queue, many_keys, datas, lens, 64, 600000, tag(1), &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_SET_MANY && c.result == POLYCACHE_RESULT_OK);
    free_completion(&c);
    many_keys[0] = "absent";
    CHECK_RC(polycache_cache_get_many_start(cache, queue, many_keys, 64, values, tag(2), &err), POLYCACHE_RESULT_OK,
             err);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_GET_MANY && c.result == POLYCACHE_RESULT_OK);
    free_completion(&c);
    CHECK(values[0] == NULL);
    int same = 0;
    for (int i = 1; i < 64; i++) {
        same += values[i] != NULL && polycache_value_len(values[i]) == lens[i] &&
                memcmp(polycache_value_data(values[i]), names[i], lens[i]) == 0;
        polycache_value_free(values[i]);
    }
    CHECK(same == 63);

    epoll_ctl(epfd, EPOLL_CTL_DEL, polycache_queue_fd(queue), NULL);
    close(epfd);
    free(slots);
    polycache_queue_free(queue);
    polycache_cache_free(cache);
}

int main(int argc, char **argv) {
    int ops = argc > 1 ? atoi(argv[1]) : 2048;
    polycache_error *err = NULL;
    /* Before the runtime starts (the first operation on a remote cache). */
    CHECK_RC(polycache_runtime_configure(2, 0, &err), POLYCACHE_RESULT_OK, err);

    test_every_call_inline();
    test_lifetime_starts("memory://");
    test_null_parameters();
    test_dead_server("redis://127.0.0.1:1/0?breaker_threshold=0&timeout=60", POLYCACHE_RESULT_CONNECTION,
                     POLYCACHE_RESULT_CONNECTION, POLYCACHE_RESULT_CONNECTION);
    test_dead_server("memcached://127.0.0.1:1?breaker_threshold=0", POLYCACHE_RESULT_CONNECTION,
                     POLYCACHE_RESULT_CONNECTION, POLYCACHE_RESULT_CONNECTION);
    test_dead_server("redis://127.0.0.1:1/0?fail_open=true", POLYCACHE_RESULT_MISS, POLYCACHE_RESULT_NOT_STORED,
                     POLYCACHE_RESULT_BACKEND);

    /* The runtime has started now: configuring it again is refused. */
    CHECK_ERR(polycache_runtime_configure(4, 0, &err), POLYCACHE_RESULT_CONFIGURATION, err, "already started");

    test_free_cache_in_flight();
    test_free_queue_in_flight();
    test_threads_share_a_queue("memory://", ops / 4);
    const char *redis = getenv("POLYCACHE_TEST_REDIS_URL");
    if (redis != NULL) {
        char url[256];
        test_threads_share_a_queue(server_url(url, sizeof url, redis, "key_prefix=threads"), ops / 8);
        test_lifetime_starts(server_url(url, sizeof url, redis, "key_prefix=lifetime"));
    }
    test_epoll_loop("POLYCACHE_TEST_REDIS_URL", ops);
    test_epoll_loop("POLYCACHE_TEST_MEMCACHED_URL", ops);
    return check_summary();
}
