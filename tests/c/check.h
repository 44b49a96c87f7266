/*
 * What every C test program shares: the CHECK macros, their counters and small helpers on
 * a cache. Each test program includes it once and ends main with `return check_summary();`.
 */
#ifndef POLYCACHE_TEST_CHECK_H
#define POLYCACHE_TEST_CHECK_H

#define _POSIX_C_SOURCE 200809L

#include "polycache.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int passed;
static int failed;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (cond) {                                                             \
            passed++;                                                           \
        } else {                                                                \
            failed++;                                                           \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                       \
    } while (0)

/* Checks that `call` returned `expected`; on a mismatch prints both names and, when the call
 * filled `err`, its message. Frees and resets `err` either way. */
#define CHECK_RC(call, expected, err) check_rc((call), (expected), &(err), #call, __LINE__)

static inline void check_rc(polycache_result got, polycache_result expected, polycache_error **err,
                     const char *what, int line) {
    if (got == expected) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "%s:%d: FAILED: %s returned %s, expected %s (%s)\n", __FILE__, line,
                what, polycache_result_name(got), polycache_result_name(expected),
                polycache_error_message(*err));
    }
    polycache_error_free(*err);
    *err = NULL;
}

static inline void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static inline polycache_cache *open_cache(const char *url) {
    polycache_cache *cache = NULL;
    polycache_error *err = NULL;
    polycache_result rc = polycache_cache_open(url, &cache, &err);
    if (rc != POLYCACHE_RESULT_OK) {
        fprintf(stderr, "cannot open %s: %s: %s\n", url, polycache_result_name(rc),
                polycache_error_message(err));
        polycache_error_free(err);
        exit(2);
    }
    return cache;
}

/* True when `key` holds exactly the `len` bytes at `want`. */
static inline int holds(polycache_cache *cache, const char *key, const void *want, size_t len) {
    polycache_value *value = NULL;
    if (polycache_cache_get(cache, key, &value, NULL) != POLYCACHE_RESULT_OK) {
        return 0;
    }
    int same = polycache_value_len(value) == len && memcmp(polycache_value_data(value), want, len) == 0;
    polycache_value_free(value);
    return same;
}

static inline int is_miss(polycache_cache *cache, const char *key) {
    polycache_value *value = NULL;
    polycache_result rc = polycache_cache_get(cache, key, &value, NULL);
    polycache_value_free(value);
    return rc == POLYCACHE_RESULT_MISS;
}

static inline int set_str(polycache_cache *cache, const char *key, const char *value, int64_t ttl_ms) {
    return polycache_cache_set(cache, key, (const uint8_t *)value, strlen(value), ttl_ms, NULL) ==
           POLYCACHE_RESULT_OK;
}

/* Checks that `call` returned `expected` with an error whose message contains `needle`;
 * frees and resets `err`. */
#define CHECK_ERR(call, expected, err, needle) check_err((call), (expected), &(err), (needle), #call, __LINE__)

static inline void check_err(polycache_result got, polycache_result expected, polycache_error **err,
                             const char *needle, const char *what, int line) {
    const char *message = polycache_error_message(*err);
    if (got == expected && *err != NULL && strstr(message, needle) != NULL) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "%s:%d: FAILED: %s returned %s (%s), expected %s with a message containing \"%s\"\n",
                __FILE__, line, what, polycache_result_name(got), message, polycache_result_name(expected), needle);
    }
    polycache_error_free(*err);
    *err = NULL;
}

/* Waits until cond(arg) is true, polling every 5 ms for at most `timeout_ms`; true when it
 * became true. Timeouts are generous: they only bound a failing test, never time a passing one. */
static inline int wait_until(int (*cond)(void *), void *arg, long timeout_ms) {
    for (long waited = 0; waited < timeout_ms; waited += 5) {
        if (cond(arg)) {
            return 1;
        }
        sleep_ms(5);
    }
    return cond(arg);
}

/* Prints "N passed, M failed"; the exit status for main. */
static inline int check_summary(void) {
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

#endif
