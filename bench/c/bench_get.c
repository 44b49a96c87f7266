/* The C side of bench/c/run.sh: the loop of ffi/examples/bench_get.rs through the C API.
 *
 * Opens memory://, sets "bench:key" to 16 bytes, then times N gets (polycache_cache_get +
 * polycache_value_free; and polycache_cache_get_into a caller's buffer) and N sets. Prints
 * `op ns_per_op` lines, the best of 3 rounds each. Usage: bench_get [N] (default 5,000,000).
 */
#define _POSIX_C_SOURCE 200809L

#include "polycache.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ROUNDS 3

static const char *const KEY = "bench:key";
static const uint8_t VALUE[16] = {'0', '1', '2', '3', '4', '5', '6', '7',
                                  '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void check(polycache_result rc, const char *what) {
    if (rc != POLYCACHE_RESULT_OK) {
        fprintf(stderr, "%s: %s\n", what, polycache_result_name(rc));
        exit(1);
    }
}

static volatile size_t sink;

static double bench_get(polycache_cache *cache, long n) {
    double best = 1e300;
    for (int r = 0; r < ROUNDS; r++) {
        size_t total = 0;
        double start = now_ns();
        for (long i = 0; i < n; i++) {
            polycache_value *value;
            check(polycache_cache_get(cache, KEY, &value, NULL), "get");
            total += polycache_value_len(value);
            polycache_value_free(value);
        }
        double ns = (now_ns() - start) / (double)n;
        best = ns < best ? ns : best;
        sink = total;
    }
    return best;
}

static double bench_get_into(polycache_cache *cache, long n) {
    double best = 1e300;
    uint8_t buf[64];
    for (int r = 0; r < ROUNDS; r++) {
        size_t total = 0;
        double start = now_ns();
        for (long i = 0; i < n; i++) {
            size_t len;
            check(polycache_cache_get_into(cache, KEY, buf, sizeof buf, &len, NULL), "get_into");
            total += len + buf[0];
        }
        double ns = (now_ns() - start) / (double)n;
        best = ns < best ? ns : best;
        sink = total;
    }
    return best;
}

static double bench_set(polycache_cache *cache, long n) {
    double best = 1e300;
    for (int r = 0; r < ROUNDS; r++) {
        double start = now_ns();
        for (long i = 0; i < n; i++) {
            check(polycache_cache_set(cache, KEY, VALUE, sizeof VALUE, POLYCACHE_TTL_DEFAULT, NULL), "set");
        }
        double ns = (now_ns() - start) / (double)n;
        best = ns < best ? ns : best;
    }
    return best;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 5000000L;
    polycache_cache *cache = NULL;
    check(polycache_cache_open("memory://", &cache, NULL), "open");
    check(polycache_cache_set(cache, KEY, VALUE, sizeof VALUE, POLYCACHE_TTL_DEFAULT, NULL), "set");

    bench_get(cache, n / 10); /* warm-up */
    printf("get %.1f\n", bench_get(cache, n));
    printf("get_into %.1f\n", bench_get_into(cache, n));
    printf("set %.1f\n", bench_set(cache, n));

    polycache_cache_free(cache);
    return 0;
}
