/*
 * The four kinds of polycache_redis_arg, built from C values: what the tests of
 * polycache_cache_redis_command and its non-blocking form share. Included after check.h.
 */
#ifndef POLYCACHE_TEST_REDIS_ARGS_H
#define POLYCACHE_TEST_REDIS_ARGS_H

#include "check.h"

static inline polycache_redis_arg key_arg(const char *key) {
    polycache_redis_arg a = {POLYCACHE_REDIS_ARG_KEY, (const uint8_t *)key, strlen(key), 0, 0.0};
    return a;
}

static inline polycache_redis_arg bytes_arg(const char *text) {
    polycache_redis_arg a = {POLYCACHE_REDIS_ARG_BYTES, (const uint8_t *)text, strlen(text), 0, 0.0};
    return a;
}

static inline polycache_redis_arg float_arg(double x) {
    polycache_redis_arg a = {POLYCACHE_REDIS_ARG_FLOAT, NULL, 0, 0, x};
    return a;
}

static inline polycache_redis_arg int_arg(int64_t n) {
    polycache_redis_arg a = {POLYCACHE_REDIS_ARG_INT, NULL, 0, n, 0.0};
    return a;
}

#endif
