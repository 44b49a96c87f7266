/*
 * 8 threads x N mixed operations on one shared polycache_cache handle, for ThreadSanitizer
 * (and AddressSanitizer, valgrind). Each thread cycles through get, get_into, set, add,
 * delete, has_key, incr of a shared counter, get_many and touch, on its own keys and on
 * keys every thread writes; at the end the shared counter must equal the number of incr
 * calls and every value read must have been one a thread wrote.
 *
 * Usage: test_threads [N]   (operations per thread; default 20000, `make tsan` runs 1000000)
 */
#include "check.h"

#define THREADS 8
#define SHARED_KEYS 16

typedef struct {
    polycache_cache *cache;
    long ops;
    int id;
    long incrs;    /* incr calls that succeeded */
    long failures; /* unexpected results */
} worker;

/* Every value is "t<thread>:<counter>" padded to 24 bytes: anything else read is corruption. */
static size_t make_value(char *buf, int id, long i) {
    int n = snprintf(buf, 32, "t%d:%ld", id, i);
    memset(buf + n, '.', 24 - (size_t)n);
    return 24;
}

static int valid_value(const uint8_t *data, size_t len) {
    return len == 24 && data[0] == 't' && data[23] == '.';
}

static void *run(void *arg) {
    worker *w = arg;
    char own[32], shared[32], buf[32];
    char value[32];
    const char *many[2];
    polycache_value *values[2];
    snprintf(own, sizeof own, "own:%d", w->id);
    for (long i = 0; i < w->ops; i++) {
        snprintf(shared, sizeof shared, "shared:%ld", i % SHARED_KEYS);
        size_t len = make_value(value, w->id, i);
        polycache_value *v = NULL;
        size_t got = 0;
        bool flag = false;
        int64_t n = 0;
        polycache_result rc;
        switch (i % 9) {
        case 0:
            rc = polycache_cache_set(w->cache, own, (const uint8_t *)value, len, POLYCACHE_TTL_NEVER, NULL);
            w->failures += rc != POLYCACHE_RESULT_OK;
            break;
        case 1:
            rc = polycache_cache_get(w->cache, own, &v, NULL);
            w->failures += rc != POLYCACHE_RESULT_OK || !valid_value(polycache_value_data(v), polycache_value_len(v)) ||
                           polycache_value_data(v)[1] != (uint8_t)('0' + w->id);
            polycache_value_free(v);
            break;
        case 2:
            rc = polycache_cache_set(w->cache, shared, (const uint8_t *)value, len, 60000, NULL);
            w->failures += rc != POLYCACHE_RESULT_OK;
            break;
        case 3:
            rc = polycache_cache_get_into(w->cache, shared, (uint8_t *)buf, sizeof buf, &got, NULL);
            w->failures += rc == POLYCACHE_RESULT_OK ? !valid_value((const uint8_t *)buf, got)
                                                     : rc != POLYCACHE_RESULT_MISS;
            break;
        case 4:
            rc = polycache_cache_add(w->cache, shared, (const uint8_t *)value, len, POLYCACHE_TTL_NEVER, &flag, NULL);
            w->failures += rc != POLYCACHE_RESULT_OK;
            break;
        case 5:
            rc = polycache_cache_delete(w->cache, shared, &flag, NULL);
            w->failures += rc != POLYCACHE_RESULT_OK;
            break;
        case 6:
            rc = polycache_cache_incr(w->cache, "counter", 1, &n, NULL);
            w->failures += rc != POLYCACHE_RESULT_OK || n < 1;
            w->incrs += rc == POLYCACHE_RESULT_OK;
            break;
        case 7:
            many[0] = own;
            many[1] = shared;
            rc = polycache_cache_get_many(w->cache, many, 2, values, NULL);
            w->failures += rc != POLYCACHE_RESULT_OK || values[0] == NULL;
            for (int k = 0; k < 2 && rc == POLYCACHE_RESULT_OK; k++) {
                if (values[k] != NULL) {
                    w->failures += !valid_value(polycache_value_data(values[k]), polycache_value_len(values[k]));
                    polycache_value_free(values[k]);
                }
            }
            break;
        default:
            rc = polycache_cache_has_key(w->cache, shared, &flag, NULL);
            w->failures += rc != POLYCACHE_RESULT_OK;
            rc = polycache_cache_touch(w->cache, own, POLYCACHE_TTL_NEVER, &flag, NULL);
            w->failures += rc != POLYCACHE_RESULT_OK || !flag;
            break;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    long ops = argc > 1 ? atol(argv[1]) : 20000;
    polycache_cache *cache = open_cache("memory://?max_entries=100000");
    CHECK(set_str(cache, "counter", "0", POLYCACHE_TTL_NEVER));
    pthread_t threads[THREADS];
    worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (worker){cache, ops, i, 0, 0};
        CHECK(pthread_create(&threads[i], NULL, run, &workers[i]) == 0);
    }
    long incrs = 0, failures = 0;
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        incrs += workers[i].incrs;
        failures += workers[i].failures;
    }
    CHECK(failures == 0);
    char want[32];
    int len = snprintf(want, sizeof want, "%ld", incrs);
    CHECK(holds(cache, "counter", want, (size_t)len));
    polycache_stats stats;
    CHECK(polycache_cache_stats(cache, &stats, NULL) == POLYCACHE_RESULT_OK);
    CHECK(stats.errors == 0);
    polycache_cache_free(cache);
    printf("%d threads x %ld operations on one handle: %ld incrs, %ld failures\n", THREADS, ops, incrs, failures);
    return check_summary();
}
