/*
 * Tests of the non-blocking forms of django-redis' operations, each driven through a
 * polycache_queue whose descriptor is watched with poll(2): add, touch, has_key, replace,
 * persist, expire_at, delete_many and clear; key scans (delete_pattern, a scan's pages, a
 * scan used twice at once, freed with a page read in flight); locks (acquire waiting on the
 * runtime, release, extend, reacquire, a queue freed with an acquire in flight); and redis_command.
 * Each group runs on memory:// (inline completions) and on the Redis that testkit's
 * `with-servers` starts (POLYCACHE_TEST_REDIS_URL), as tests/c/run.sh runs it, under
 * valgrind and AddressSanitizer + UBSan.
 */

#include "check.h"
#include "redis_args.h"
#include "queue_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOKEN(s) (const uint8_t *)(s), strlen(s)

/* Starts nothing but checks one started operation's completion: its op, its result and,
 * for OK, its integer. Frees what the completion holds. */
static void expect(polycache_queue *queue, polycache_op op, polycache_result result, int64_t integer, int line) {
    polycache_completion c;
    if (!next(queue, &c)) {
        CHECK(0);
        return;
    }
    if (c.op == op && c.result == result && (result != POLYCACHE_RESULT_OK || c.integer == integer) &&
        (c.error != NULL) == (result != POLYCACHE_RESULT_OK && result != POLYCACHE_RESULT_MISS)) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "%s:%d: FAILED: completion op %u %s integer %lld (%s), expected op %u %s integer %lld\n",
                __FILE__, line, c.op, polycache_result_name(c.result), (long long)c.integer,
                polycache_error_message(c.error), op, polycache_result_name(result), (long long)integer);
    }
    free_completion(&c);
}
#define EXPECT(queue, op, result, integer) expect((queue), (op), (result), (integer), __LINE__)

/* The URL of the test Redis with `options` and generous socket timeouts (they bound a
 * failing test under valgrind; a passing one never waits for them). */
static const char *redis_url(char *url, size_t cap, const char *options) {
    const char *base = getenv("POLYCACHE_TEST_REDIS_URL");
    if (base == NULL) {
        return NULL;
    }
    snprintf(url, cap, "%s%s%s&socket_timeout=60&connect_timeout=60", base, strchr(base, '?') ? "&" : "?",
             options);
    return url;
}

static int64_t ttl_of(polycache_cache *cache, const char *key) {
    int64_t ms = 0;
    polycache_error *err = NULL;
    polycache_result rc = polycache_cache_ttl(cache, key, &ms, &err);
    polycache_error_free(err);
    return rc == POLYCACHE_RESULT_OK ? ms : -1;
}

/* add, touch, has_key, replace, persist, expire_at, delete_many, clear. */
static void test_cache_ops(const char *url) {
    polycache_cache *cache = open_cache(url);
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_clear(cache, &err), POLYCACHE_RESULT_OK, err);

    CHECK_RC(polycache_cache_add_start(cache, queue, "a", TOKEN("1"), POLYCACHE_TTL_NEVER, tag(1), &err),
             POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_ADD, POLYCACHE_RESULT_OK, 1);
    CHECK_RC(polycache_cache_add_start(cache, queue, "a", TOKEN("2"), POLYCACHE_TTL_NEVER, tag(2), &err),
             POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_ADD, POLYCACHE_RESULT_OK, 0);
    CHECK(holds(cache, "a", "1", 1));

    CHECK_RC(polycache_cache_has_key_start(cache, queue, "a", NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_HAS_KEY, POLYCACHE_RESULT_OK, 1);
    CHECK_RC(polycache_cache_has_key_start(cache, queue, "nope", NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_HAS_KEY, POLYCACHE_RESULT_OK, 0);

    CHECK_RC(polycache_cache_replace_start(cache, queue, "a", TOKEN("3"), POLYCACHE_TTL_NEVER, NULL, &err),
             POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_REPLACE, POLYCACHE_RESULT_OK, 1);
    CHECK(holds(cache, "a", "3", 1));
    CHECK_RC(polycache_cache_replace_start(cache, queue, "nope", TOKEN("3"), POLYCACHE_TTL_NEVER, NULL, &err),
             POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_REPLACE, POLYCACHE_RESULT_OK, 0);
    CHECK(is_miss(cache, "nope"));

    CHECK_RC(polycache_cache_touch_start(cache, queue, "a", 600000, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_TOUCH, POLYCACHE_RESULT_OK, 1);
    int64_t left = ttl_of(cache, "a");
    CHECK(left > 0 && left <= 600000);
    CHECK_RC(polycache_cache_touch_start(cache, queue, "nope", 600000, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_TOUCH, POLYCACHE_RESULT_OK, 0);

    CHECK_RC(polycache_cache_persist_start(cache, queue, "a", NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_PERSIST, POLYCACHE_RESULT_OK, 1);
    CHECK(ttl_of(cache, "a") == POLYCACHE_TTL_NEVER);
    CHECK_RC(polycache_cache_persist_start(cache, queue, "nope", NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_PERSIST, POLYCACHE_RESULT_OK, 0);

    /* A time far ahead sets a TTL; one in the past removes the key, as PEXPIREAT does. */
    int64_t later = (int64_t)time(NULL) * 1000 + 3600 * 1000;
    CHECK_RC(polycache_cache_expire_at_start(cache, queue, "a", later, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_EXPIRE_AT, POLYCACHE_RESULT_OK, 1);
    left = ttl_of(cache, "a");
    CHECK(left > 0 && left <= 3600 * 1000 + 1000);
    CHECK_RC(polycache_cache_expire_at_start(cache, queue, "a", 1000, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_EXPIRE_AT, POLYCACHE_RESULT_OK, 1);
    CHECK(is_miss(cache, "a"));
    CHECK_RC(polycache_cache_expire_at_start(cache, queue, "a", later, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_EXPIRE_AT, POLYCACHE_RESULT_OK, 0);

    /* An oversized value fails in the completion, as the blocking call fails. */
    if (strncmp(url, "memory://", 9) == 0) {
        polycache_cache *small = open_cache("memory://?max_value_size=2");
        CHECK_RC(polycache_cache_add_start(small, queue, "big", TOKEN("xyz"), POLYCACHE_TTL_NEVER, NULL, &err),
                 POLYCACHE_RESULT_OK, err);
        EXPECT(queue, POLYCACHE_OP_ADD, POLYCACHE_RESULT_VALUE_TOO_LARGE, 0);
        CHECK(set_str(small, "big", "1", POLYCACHE_TTL_NEVER));
        CHECK_RC(polycache_cache_replace_start(small, queue, "big", TOKEN("xyz"), POLYCACHE_TTL_NEVER, NULL, &err),
                 POLYCACHE_RESULT_OK, err);
        EXPECT(queue, POLYCACHE_OP_REPLACE, POLYCACHE_RESULT_VALUE_TOO_LARGE, 0);
        CHECK(holds(small, "big", "1", 1));
        polycache_cache_free(small);
    }

    CHECK(set_str(cache, "x", "1", POLYCACHE_TTL_NEVER) && set_str(cache, "y", "2", POLYCACHE_TTL_NEVER));
    const char *keys[] = {"x", "y", "z"};
    CHECK_RC(polycache_cache_delete_many_start(cache, queue, keys, 3, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_DELETE_MANY, POLYCACHE_RESULT_OK, 2);
    CHECK(is_miss(cache, "x") && is_miss(cache, "y"));
    CHECK_RC(polycache_cache_delete_many_start(cache, queue, NULL, 0, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_DELETE_MANY, POLYCACHE_RESULT_OK, 0);

    CHECK(set_str(cache, "x", "1", POLYCACHE_TTL_NEVER) && set_str(cache, "y", "2", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_clear_start(cache, queue, tag(7), &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_CLEAR, POLYCACHE_RESULT_OK, 0);
    CHECK(is_miss(cache, "x") && is_miss(cache, "y"));

    /* NULL and non-UTF-8 arguments: the start call fails and nothing is queued. */
    const char *bad_keys[] = {"x", NULL};
    CHECK_ERR(polycache_cache_add_start(cache, queue, NULL, TOKEN("1"), 1000, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "key");
    CHECK_ERR(polycache_cache_add_start(cache, queue, "k", NULL, 1, 1000, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER,
              err, "value");
    CHECK_ERR(polycache_cache_replace_start(NULL, queue, "k", TOKEN("1"), 1000, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "cache");
    CHECK_ERR(polycache_cache_touch_start(cache, NULL, "k", 1000, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err,
              "queue");
    CHECK_ERR(polycache_cache_has_key_start(cache, queue, "\xff", NULL, &err), POLYCACHE_RESULT_INVALID_UTF8, err,
              "key");
    CHECK_ERR(polycache_cache_persist_start(cache, queue, NULL, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err,
              "key");
    CHECK_ERR(polycache_cache_expire_at_start(cache, queue, "\xc3", 0, NULL, &err), POLYCACHE_RESULT_INVALID_UTF8,
              err, "key");
    CHECK_ERR(polycache_cache_delete_many_start(cache, queue, NULL, 1, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER,
              err, "keys");
    CHECK_ERR(polycache_cache_delete_many_start(cache, queue, bad_keys, 2, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "keys[i]");
    CHECK_ERR(polycache_cache_clear_start(NULL, queue, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "cache");
    CHECK_ERR(polycache_cache_clear_start(cache, NULL, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "queue");
    CHECK(polycache_queue_pending(queue) == 0 && !readable(queue, 0));

    /* Completions never drained are freed with the queue. */
    CHECK_RC(polycache_cache_add_start(cache, queue, "late", TOKEN("1"), 1000, NULL, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_clear_start(cache, queue, NULL, &err), POLYCACHE_RESULT_OK, err);
    polycache_queue_free(queue);
    polycache_cache_free(cache);
}

/* i for the key "sc:<i>" with 0 <= i < n (not NUL-terminated, as a scan hands it out);
 * -1 for any other key. */
static int scan_index(const polycache_value *key, int n) {
    char text[32];
    size_t len = polycache_value_len(key);
    if (len <= 3 || len >= sizeof text || memcmp(polycache_value_data(key), "sc:", 3) != 0) {
        return -1;
    }
    memcpy(text, polycache_value_data(key), len);
    text[len] = '\0';
    int i = atoi(text + 3);
    return i >= 0 && i < n ? i : -1;
}

/* delete_pattern and a scan read a page at a time through the queue. */
static void test_scans(const char *url) {
    polycache_cache *cache = open_cache(url);
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    polycache_completion c;
    char key[32];
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_clear(cache, &err), POLYCACHE_RESULT_OK, err);
    enum { N = 25 };
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "sc:%d", i);
        CHECK(set_str(cache, key, "v", POLYCACHE_TTL_NEVER));
    }
    CHECK(set_str(cache, "other", "v", POLYCACHE_TTL_NEVER));

    polycache_key_scan *scan = NULL;
    CHECK_RC(polycache_cache_scan_keys(cache, "sc:*", 5, &scan, &err), POLYCACHE_RESULT_OK, err);
    int seen[N] = {0};
    int distinct = 0, strays = 0, pages = 0, over = 0;
    while (!over && pages < 1000) {
        CHECK_RC(polycache_key_scan_next_start(scan, queue, tag(5), &err), POLYCACHE_RESULT_OK, err);
        if (!next(queue, &c)) {
            CHECK(0);
            break;
        }
        CHECK(c.op == POLYCACHE_OP_KEY_SCAN_NEXT && c.user_data == tag(5) && c.error == NULL);
        if (c.result == POLYCACHE_RESULT_MISS) {
            over = 1;
            break;
        }
        CHECK(c.result == POLYCACHE_RESULT_OK && c.integer >= 0);
        pages++;
        int64_t ready = c.integer;
        if (ready >= 2) {
            /* Keys still ready: the next start reads nothing and counts them. */
            polycache_value *first = NULL;
            CHECK_RC(polycache_key_scan_next(scan, &first, &err), POLYCACHE_RESULT_OK, err);
            CHECK_RC(polycache_key_scan_next_start(scan, queue, NULL, &err), POLYCACHE_RESULT_OK, err);
            EXPECT(queue, POLYCACHE_OP_KEY_SCAN_NEXT, POLYCACHE_RESULT_OK, ready - 1);
            int i = scan_index(first, N);
            if (i >= 0) {
                distinct += !seen[i]++;
            } else {
                strays++;
            }
            polycache_value_free(first);
            ready--;
        }
        for (int64_t k = 0; k < ready; k++) {
            polycache_value *got = NULL;
            CHECK_RC(polycache_key_scan_next(scan, &got, &err), POLYCACHE_RESULT_OK, err);
            int i = scan_index(got, N);
            if (i >= 0) {
                distinct += !seen[i]++;
            } else {
                strays++;
            }
            polycache_value_free(got);
        }
    }
    CHECK(over && distinct == N && strays == 0 && pages > 0);
    /* Over: the next start and the blocking next say so. */
    CHECK_RC(polycache_key_scan_next_start(scan, queue, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_KEY_SCAN_NEXT, POLYCACHE_RESULT_MISS, 0);
    polycache_value *none = NULL;
    CHECK_RC(polycache_key_scan_next(scan, &none, &err), POLYCACHE_RESULT_MISS, err);
    CHECK(none == NULL);
    polycache_key_scan_free(scan);

    CHECK_RC(polycache_cache_delete_pattern_start(cache, queue, "sc:1*", 2, tag(6), &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_DELETE_PATTERN, POLYCACHE_RESULT_OK, 11); /* sc:1, sc:10 to sc:19 */
    CHECK(is_miss(cache, "sc:1") && is_miss(cache, "sc:15") && holds(cache, "sc:2", "v", 1));
    CHECK_RC(polycache_cache_delete_pattern_start(cache, queue, "sc:*", 1000, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_DELETE_PATTERN, POLYCACHE_RESULT_OK, N - 11);
    CHECK(holds(cache, "other", "v", 1));
    CHECK_RC(polycache_cache_delete_pattern_start(cache, queue, "*", 0, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_DELETE_PATTERN, POLYCACHE_RESULT_INVALID_KEY, 0);
    CHECK(holds(cache, "other", "v", 1));

    CHECK_ERR(polycache_cache_delete_pattern_start(cache, queue, NULL, 10, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "pattern");
    CHECK_ERR(polycache_cache_delete_pattern_start(cache, queue, "\xff*", 10, NULL, &err),
              POLYCACHE_RESULT_INVALID_UTF8, err, "pattern");
    CHECK_ERR(polycache_key_scan_next_start(NULL, queue, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "scan");
    CHECK_RC(polycache_cache_scan_keys(cache, "*", 10, &scan, &err), POLYCACHE_RESULT_OK, err);
    CHECK_ERR(polycache_key_scan_next_start(scan, NULL, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "queue");
    polycache_key_scan_free(scan);
    CHECK(polycache_queue_pending(queue) == 0);
    polycache_queue_free(queue);
    polycache_cache_free(cache);
}

/* A loopback listener that accepts and never answers: a Redis whose replies never come, so
 * that a page read stays in flight until the test closes the connection. */
static int silent_server(char *url, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("silent server");
        exit(2);
    }
    snprintf(url, cap, "redis://127.0.0.1:%d/0?breaker_threshold=0&timeout=60&socket_timeout=60&connect_timeout=60",
             ntohs(addr.sin_port));
    return fd;
}

/* Closes the silent server: its listener first (a reconnect is refused), then each
 * connection it accepted (the read in flight fails). */
static void close_silent(int listener) {
    int conns[8], n = 0;
    struct pollfd pfd = {listener, POLLIN, 0};
    while (n < 8 && poll(&pfd, 1, n == 0 ? WAIT_MS : 0) == 1) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0) {
            break;
        }
        conns[n++] = conn;
    }
    CHECK(n > 0);
    close(listener);
    for (int i = 0; i < n; i++) {
        close(conns[i]);
    }
}

static int scan_not_busy(void *arg) {
    polycache_value *key = NULL;
    polycache_result rc = polycache_key_scan_next(arg, &key, NULL);
    polycache_value_free(key);
    return rc != POLYCACHE_RESULT_CONFIGURATION;
}

/* A scan is one cursor: a second use while a page read is in flight is refused with a
 * clear error, and the scan (or the queue) may be freed meanwhile. */
static void test_scan_in_flight(void) {
    char url[256];
    int listener = silent_server(url, sizeof url);
    polycache_cache *cache = open_cache(url);
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    polycache_completion c;
    polycache_key_scan *scan = NULL;
    polycache_value *key = NULL;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_scan_keys(cache, "*", 10, &scan, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_key_scan_next_start(scan, queue, tag(1), &err), POLYCACHE_RESULT_OK, err);
    CHECK_ERR(polycache_key_scan_next_start(scan, queue, tag(2), &err), POLYCACHE_RESULT_CONFIGURATION, err,
              "has not completed");
    CHECK_ERR(polycache_key_scan_next(scan, &key, &err), POLYCACHE_RESULT_CONFIGURATION, err, "has not completed");
    CHECK(key == NULL && polycache_queue_pending(queue) == 1);
    /* Freed with its read in flight: the read finishes and its completion still comes. */
    polycache_key_scan_free(scan);
    close_silent(listener);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_KEY_SCAN_NEXT && c.user_data == tag(1));
    CHECK(c.result == POLYCACHE_RESULT_CONNECTION && c.error != NULL);
    free_completion(&c);
    polycache_cache_free(cache);

    /* The queue freed with the read in flight: the scan gets its cursor back. */
    listener = silent_server(url, sizeof url);
    cache = open_cache(url);
    CHECK_RC(polycache_cache_scan_keys(cache, "*", 10, &scan, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_key_scan_next_start(scan, queue, tag(3), &err), POLYCACHE_RESULT_OK, err);
    polycache_queue_free(queue);
    close_silent(listener);
    CHECK(wait_until(scan_not_busy, scan, WAIT_MS));
    /* The failed read ended the scan. */
    CHECK_RC(polycache_key_scan_next(scan, &key, &err), POLYCACHE_RESULT_MISS, err);
    polycache_key_scan_free(scan);
    polycache_cache_free(cache);
}

static polycache_lock *open_lock(polycache_cache *cache, const char *name, int64_t timeout_ms) {
    polycache_lock *lock = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_lock_new(cache, name, timeout_ms, &lock, &err), POLYCACHE_RESULT_OK, err);
    return lock;
}

struct owner_wait {
    polycache_lock *lock;
    const char *token;
};

static int holds_lock(void *arg) {
    struct owner_wait *w = arg;
    bool owned = false;
    return polycache_lock_owned(w->lock, TOKEN(w->token), &owned, NULL) == POLYCACHE_RESULT_OK && owned;
}

static void test_locks(const char *url) {
    polycache_cache *cache = open_cache(url);
    polycache_lock *lock = open_lock(cache, "job", 30000);
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    polycache_completion c;
    bool flag = false;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_clear(cache, &err), POLYCACHE_RESULT_OK, err);

    CHECK_RC(polycache_lock_acquire_start(lock, queue, TOKEN("a"), false, 0, 0, tag(1), &err), POLYCACHE_RESULT_OK,
             err);
    EXPECT(queue, POLYCACHE_OP_LOCK_ACQUIRE, POLYCACHE_RESULT_OK, 1);
    CHECK_RC(polycache_lock_acquire_start(lock, queue, TOKEN("b"), false, 0, 0, tag(2), &err), POLYCACHE_RESULT_OK,
             err);
    EXPECT(queue, POLYCACHE_OP_LOCK_ACQUIRE, POLYCACHE_RESULT_OK, 0);
    /* Blocking, but the next try would come after the blocking timeout: gives up. */
    CHECK_RC(polycache_lock_acquire_start(lock, queue, TOKEN("b"), true, 1, 50, tag(3), &err), POLYCACHE_RESULT_OK,
             err);
    EXPECT(queue, POLYCACHE_OP_LOCK_ACQUIRE, POLYCACHE_RESULT_OK, 0);

    /* Blocking for ever: it waits on the runtime (the start call returned) while "a"
     * holds the lock, and completes once "a" releases it. */
    CHECK_RC(polycache_lock_acquire_start(lock, queue, TOKEN("b"), true, POLYCACHE_TTL_NEVER, 5, tag(4), &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(polycache_queue_pending(queue) == 1);
    CHECK(!readable(queue, 0));
    /* "b" does not hold the lock: its release fails. Awaited before "a" lets go, since the
     * two releases run concurrently on the runtime, and the waiting acquire could take the
     * lock for "b" between them. */
    CHECK_RC(polycache_lock_release_start(lock, queue, TOKEN("b"), tag(5), &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_LOCK_RELEASE, POLYCACHE_RESULT_LOCK_NOT_OWNED, 0);
    CHECK(polycache_queue_pending(queue) == 1);
    CHECK_RC(polycache_lock_release_start(lock, queue, TOKEN("a"), tag(6), &err), POLYCACHE_RESULT_OK, err);
    int got = 0;
    for (int i = 0; i < 2; i++) {
        if (!next(queue, &c)) {
            CHECK(0);
            break;
        }
        if (c.user_data == tag(4)) {
            got += c.op == POLYCACHE_OP_LOCK_ACQUIRE && c.result == POLYCACHE_RESULT_OK && c.integer == 1;
        } else if (c.user_data == tag(6)) {
            got += c.op == POLYCACHE_OP_LOCK_RELEASE && c.result == POLYCACHE_RESULT_OK && c.error == NULL;
        }
        free_completion(&c);
    }
    CHECK(got == 2);
    CHECK_RC(polycache_lock_owned(lock, TOKEN("b"), &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag);

    CHECK_RC(polycache_lock_extend_start(lock, queue, TOKEN("b"), 60000, true, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_LOCK_EXTEND, POLYCACHE_RESULT_OK, 0);
    int64_t left = ttl_of(cache, "job");
    CHECK(left > 30000);
    CHECK_RC(polycache_lock_extend_start(lock, queue, TOKEN("a"), 1000, false, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_LOCK_EXTEND, POLYCACHE_RESULT_LOCK_NOT_OWNED, 0);
    CHECK_RC(polycache_lock_extend_start(lock, queue, TOKEN("b"), -1, false, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_LOCK_EXTEND, POLYCACHE_RESULT_CONFIGURATION, 0);
    CHECK_RC(polycache_lock_reacquire_start(lock, queue, TOKEN("b"), NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_LOCK_REACQUIRE, POLYCACHE_RESULT_OK, 0);
    left = ttl_of(cache, "job");
    CHECK(left > 0 && left <= 30000);
    CHECK_RC(polycache_lock_reacquire_start(lock, queue, TOKEN("a"), NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_LOCK_REACQUIRE, POLYCACHE_RESULT_LOCK_NOT_OWNED, 0);
    polycache_lock *forever = open_lock(cache, "forever", POLYCACHE_TTL_NEVER);
    CHECK_RC(polycache_lock_acquire_start(forever, queue, TOKEN("f"), false, 0, 0, NULL, &err), POLYCACHE_RESULT_OK,
             err);
    EXPECT(queue, POLYCACHE_OP_LOCK_ACQUIRE, POLYCACHE_RESULT_OK, 1);
    CHECK_RC(polycache_lock_extend_start(forever, queue, TOKEN("f"), 1000, false, NULL, &err), POLYCACHE_RESULT_OK,
             err);
    EXPECT(queue, POLYCACHE_OP_LOCK_EXTEND, POLYCACHE_RESULT_LOCK, 0);
    CHECK_RC(polycache_lock_reacquire_start(forever, queue, TOKEN("f"), NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_LOCK_REACQUIRE, POLYCACHE_RESULT_LOCK, 0);
    CHECK_RC(polycache_lock_release(forever, TOKEN("f"), &err), POLYCACHE_RESULT_OK, err);
    polycache_lock_free(forever);

    /* The blocking call's argument errors arrive as completions; NULLs fail at start. */
    CHECK_RC(polycache_lock_acquire_start(lock, queue, (const uint8_t *)"", 0, false, 0, 0, NULL, &err),
             POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_LOCK_ACQUIRE, POLYCACHE_RESULT_CONFIGURATION, 0);
    CHECK_RC(polycache_lock_acquire_start(lock, queue, TOKEN("c"), true, 1000, -1, NULL, &err), POLYCACHE_RESULT_OK,
             err);
    EXPECT(queue, POLYCACHE_OP_LOCK_ACQUIRE, POLYCACHE_RESULT_CONFIGURATION, 0);
    CHECK_RC(polycache_lock_release_start(lock, queue, (const uint8_t *)"", 0, NULL, &err), POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_LOCK_RELEASE, POLYCACHE_RESULT_CONFIGURATION, 0);
    CHECK_ERR(polycache_lock_acquire_start(NULL, queue, TOKEN("c"), false, 0, 0, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "lock");
    CHECK_ERR(polycache_lock_acquire_start(lock, NULL, TOKEN("c"), false, 0, 0, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "queue");
    CHECK_ERR(polycache_lock_release_start(lock, queue, NULL, 1, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err,
              "token");
    CHECK_ERR(polycache_lock_extend_start(lock, queue, NULL, 1, 10, false, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "token");
    CHECK_ERR(polycache_lock_reacquire_start(lock, NULL, TOKEN("b"), NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER,
              err, "queue");
    CHECK(polycache_queue_pending(queue) == 0);

    /* The queue and the lock handle freed while an acquire waits: it goes on waiting, and
     * takes the lock once "b" releases it. */
    CHECK_RC(polycache_lock_acquire_start(lock, queue, TOKEN("d"), true, POLYCACHE_TTL_NEVER, 5, NULL, &err),
             POLYCACHE_RESULT_OK, err);
    polycache_queue_free(queue);
    polycache_lock_free(lock);
    polycache_lock *again = open_lock(cache, "job", 30000);
    CHECK_RC(polycache_lock_release(again, TOKEN("b"), &err), POLYCACHE_RESULT_OK, err);
    struct owner_wait d = {again, "d"};
    CHECK(wait_until(holds_lock, &d, WAIT_MS));
    CHECK_RC(polycache_lock_release(again, TOKEN("d"), &err), POLYCACHE_RESULT_OK, err);
    polycache_lock_free(again);
    polycache_cache_free(cache);
}

static int64_t scard(polycache_cache *cache, const char *key) {
    polycache_redis_arg args[] = {key_arg(key)};
    polycache_redis_reply *reply = NULL;
    if (polycache_cache_redis_command(cache, "SCARD", args, 1, &reply, NULL) != POLYCACHE_RESULT_OK) {
        return -1;
    }
    int64_t n = polycache_redis_reply_int(reply);
    polycache_redis_reply_free(reply);
    return n;
}

struct card_wait {
    polycache_cache *cache;
    const char *key;
    int64_t want;
};

static int has_card(void *arg) {
    struct card_wait *w = arg;
    return scard(w->cache, w->key) == w->want;
}

/* redis_command's reply reaches the caller's reply_out only when its completion is
 * drained; memory:// answers UNSUPPORTED, inline. */
static void test_redis_command(const char *url) {
    polycache_cache *cache = open_cache(url);
    int redis = strstr(url, "redis://") == url;
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    polycache_completion c;
    polycache_redis_reply *const untouched = (polycache_redis_reply *)&err;
    polycache_redis_reply *reply = untouched;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    polycache_redis_arg del[] = {key_arg("s"), bytes_arg("a"), bytes_arg("b"), bytes_arg("c")};
    if (redis) {
        polycache_redis_reply *gone = NULL;
        CHECK_RC(polycache_cache_redis_command(cache, "SREM", del, 4, &gone, &err), POLYCACHE_RESULT_OK, err);
        polycache_redis_reply_free(gone);
    }

    polycache_redis_arg sadd[] = {key_arg("s"), bytes_arg("a"), bytes_arg("b")};
    CHECK_RC(polycache_cache_redis_command_start(cache, queue, "sadd", sadd, 3, &reply, tag(1), &err),
             POLYCACHE_RESULT_OK, err);
    /* Written only by the drain that hands out the completion. */
    CHECK(reply == untouched);
    CHECK(next(queue, &c) && c.op == POLYCACHE_OP_REDIS_COMMAND && c.user_data == tag(1));
    if (redis) {
        CHECK(c.result == POLYCACHE_RESULT_OK && c.error == NULL);
        CHECK(reply != untouched && polycache_redis_reply_kind(reply) == POLYCACHE_REDIS_REPLY_INT);
        CHECK(polycache_redis_reply_int(reply) == 2);
        polycache_redis_reply_free(reply);
        reply = untouched;

        polycache_redis_arg members[] = {key_arg("s")};
        CHECK_RC(polycache_cache_redis_command_start(cache, queue, "SMEMBERS", members, 1, &reply, tag(2), &err),
                 POLYCACHE_RESULT_OK, err);
        free_completion(&c);
        CHECK(next(queue, &c) && c.result == POLYCACHE_RESULT_OK);
        CHECK(polycache_redis_reply_kind(reply) == POLYCACHE_REDIS_REPLY_ARRAY &&
              polycache_redis_reply_array_len(reply) == 2);
        polycache_redis_reply_free(reply);
        reply = untouched;
    } else {
        CHECK(c.result == POLYCACHE_RESULT_UNSUPPORTED && c.error != NULL && reply == untouched);
    }
    free_completion(&c);

    /* The blocking call's refusals arrive as completions, reply_out untouched. */
    CHECK_RC(polycache_cache_redis_command_start(cache, queue, "FLUSHALL", NULL, 0, &reply, NULL, &err),
             POLYCACHE_RESULT_OK, err);
    EXPECT(queue, POLYCACHE_OP_REDIS_COMMAND, POLYCACHE_RESULT_UNSUPPORTED, 0);
    if (redis) {
        polycache_redis_arg odd[] = {key_arg("s"), {9, NULL, 0, 0, 0.0}};
        CHECK_RC(polycache_cache_redis_command_start(cache, queue, "SADD", odd, 2, &reply, NULL, &err),
                 POLYCACHE_RESULT_OK, err);
        EXPECT(queue, POLYCACHE_OP_REDIS_COMMAND, POLYCACHE_RESULT_INVALID_KEY, 0);
    }
    CHECK(reply == untouched);

    /* NULL and non-UTF-8 arguments fail at start. */
    polycache_redis_arg bad_key[] = {{POLYCACHE_REDIS_ARG_KEY, (const uint8_t *)"\xff", 1, 0, 0.0}};
    polycache_redis_arg null_data[] = {{POLYCACHE_REDIS_ARG_BYTES, NULL, 3, 0, 0.0}};
    CHECK_ERR(polycache_cache_redis_command_start(cache, queue, NULL, sadd, 3, &reply, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "command");
    CHECK_ERR(polycache_cache_redis_command_start(cache, queue, "SADD", sadd, 3, NULL, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "reply_out");
    CHECK_ERR(polycache_cache_redis_command_start(cache, queue, "SADD", NULL, 1, &reply, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "args");
    CHECK_ERR(polycache_cache_redis_command_start(cache, queue, "SADD", null_data, 1, &reply, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "args[i].data");
    CHECK_ERR(polycache_cache_redis_command_start(cache, queue, "SADD", bad_key, 1, &reply, NULL, &err),
              POLYCACHE_RESULT_INVALID_UTF8, err, "args[i].data");
    CHECK_ERR(polycache_cache_redis_command_start(NULL, queue, "SADD", sadd, 3, &reply, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "cache");
    CHECK_ERR(polycache_cache_redis_command_start(cache, NULL, "SADD", sadd, 3, &reply, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "queue");
    CHECK(polycache_queue_pending(queue) == 0 && reply == untouched);

    /* The queue freed with a command in flight: it runs, and reply_out is never written. */
    polycache_redis_arg more[] = {key_arg("s"), bytes_arg("c")};
    CHECK_RC(polycache_cache_redis_command_start(cache, queue, "SADD", more, 2, &reply, NULL, &err),
             POLYCACHE_RESULT_OK, err);
    polycache_queue_free(queue);
    if (redis) {
        struct card_wait three = {cache, "s", 3};
        CHECK(wait_until(has_card, &three, WAIT_MS));
        polycache_redis_reply *gone = NULL;
        CHECK_RC(polycache_cache_redis_command(cache, "SREM", del, 4, &gone, &err), POLYCACHE_RESULT_OK, err);
        polycache_redis_reply_free(gone);
    }
    CHECK(reply == untouched);
    polycache_cache_free(cache);
}

int main(void) {
    test_cache_ops("memory://?key_prefix=ops");
    test_scans("memory://?key_prefix=scans");
    test_locks("memory://");
    test_redis_command("memory://");
    test_scan_in_flight();
    char url[256];
    if (redis_url(url, sizeof url, "key_prefix=c-ops") == NULL) {
        fprintf(stderr, "POLYCACHE_TEST_REDIS_URL is not set: run this test through tests/c/run.sh, which starts "
                        "the servers\n");
        CHECK(0);
        return check_summary();
    }
    test_cache_ops(url);
    test_scans(redis_url(url, sizeof url, "key_prefix=c-scans"));
    test_locks(redis_url(url, sizeof url, "key_prefix=c-locks"));
    test_redis_command(redis_url(url, sizeof url, "key_prefix=c-structures-start"));
    return check_summary();
}
