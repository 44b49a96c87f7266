/*
 * Per-operation counters and latency histograms through the C API: polycache_cache_op_stats,
 * polycache_cache_op_latency, polycache_latency_bucket_bound_ns, polycache_cache_breaker_stats
 * and polycache_stats_op_name, after known operations on memory://, with histograms on and
 * off; bad arguments give codes, never a crash.
 */
#include "check.h"

static void known_ops(polycache_cache *cache) {
    bool flag;
    int64_t n;
    CHECK(set_str(cache, "a", "hello", POLYCACHE_TTL_NEVER));
    CHECK(set_str(cache, "n", "1", POLYCACHE_TTL_NEVER));
    CHECK(holds(cache, "a", "hello", 5));
    CHECK(is_miss(cache, "absent"));
    CHECK(polycache_cache_incr(cache, "n", 2, &n, NULL) == POLYCACHE_RESULT_OK && n == 3);
    CHECK(polycache_cache_decr(cache, "n", 1, &n, NULL) == POLYCACHE_RESULT_OK && n == 2);
    CHECK(polycache_cache_delete(cache, "a", &flag, NULL) == POLYCACHE_RESULT_OK && flag);
}

static void check_counts(polycache_cache *cache, int histograms) {
    polycache_error *err = NULL;
    polycache_op_stats get;
    memset(&get, 0xff, sizeof get);
    CHECK_RC(polycache_cache_op_stats(cache, POLYCACHE_STATS_OP_GET, &get, &err), POLYCACHE_RESULT_OK, err);
    CHECK(get.calls == 2 && get.hits == 1 && get.misses == 1);
    CHECK(get.errors == 0 && get.timeouts == 0);
    CHECK(get.bytes_read == 5 && get.bytes_written == 0);
    CHECK(get.latency_count == (histograms ? 2u : 0u));

    polycache_op_stats set, incr, clear;
    CHECK_RC(polycache_cache_op_stats(cache, POLYCACHE_STATS_OP_SET, &set, &err), POLYCACHE_RESULT_OK, err);
    CHECK(set.calls == 2 && set.bytes_written == 6);
    CHECK_RC(polycache_cache_op_stats(cache, POLYCACHE_STATS_OP_INCR, &incr, &err), POLYCACHE_RESULT_OK, err);
    CHECK(incr.calls == 2); /* decr counts as incr */
    CHECK_RC(polycache_cache_op_stats(cache, POLYCACHE_STATS_OP_CLEAR, &clear, &err), POLYCACHE_RESULT_OK, err);
    CHECK(clear.calls == 0 && clear.latency_count == 0);

    uint64_t buckets[POLYCACHE_LATENCY_BUCKETS + 1];
    buckets[POLYCACHE_LATENCY_BUCKETS] = 42;
    CHECK_RC(polycache_cache_op_latency(cache, POLYCACHE_STATS_OP_GET, buckets, POLYCACHE_LATENCY_BUCKETS + 1, &err),
             POLYCACHE_RESULT_OK, err);
    uint64_t total = 0;
    for (size_t i = 0; i < POLYCACHE_LATENCY_BUCKETS; i++) {
        total += buckets[i];
    }
    CHECK(total == get.latency_count);
    CHECK(buckets[POLYCACHE_LATENCY_BUCKETS] == 42); /* past the histogram: untouched */

    polycache_breaker_stats breaker;
    memset(&breaker, 0xff, sizeof breaker);
    CHECK_RC(polycache_cache_breaker_stats(cache, &breaker, &err), POLYCACHE_RESULT_OK, err);
    CHECK(breaker.opened == 0 && breaker.half_opened == 0 && breaker.closed == 0);
}

static void test_counts_and_histograms(void) {
    polycache_cache *cache = open_cache("memory://?latency_sampling=1");
    known_ops(cache);
    check_counts(cache, 1);
    polycache_cache_free(cache);

    polycache_cache *off = open_cache("memory://?latency_histograms=off");
    known_ops(off);
    check_counts(off, 0);
    polycache_cache_free(off);
}

static void test_bounds_and_names(void) {
    CHECK(polycache_latency_bucket_bound_ns(0) == 100);
    CHECK(polycache_latency_bucket_bound_ns(POLYCACHE_LATENCY_BUCKETS - 2) == 10000000000ull);
    CHECK(polycache_latency_bucket_bound_ns(POLYCACHE_LATENCY_BUCKETS - 1) == UINT64_MAX);
    CHECK(polycache_latency_bucket_bound_ns((size_t)-1) == UINT64_MAX);
    for (size_t i = 1; i + 1 < POLYCACHE_LATENCY_BUCKETS; i++) {
        CHECK(polycache_latency_bucket_bound_ns(i - 1) < polycache_latency_bucket_bound_ns(i));
    }
    CHECK(strcmp(polycache_stats_op_name(POLYCACHE_STATS_OP_GET), "get") == 0);
    CHECK(strcmp(polycache_stats_op_name(POLYCACHE_STATS_OP_HAS_KEY), "has_key") == 0);
    CHECK(strcmp(polycache_stats_op_name(POLYCACHE_STATS_OP_CLEAR), "clear") == 0);
    CHECK(strcmp(polycache_stats_op_name(POLYCACHE_STATS_OPERATIONS), "unknown") == 0);
}

static void test_bad_arguments(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    polycache_op_stats op;
    uint64_t buckets[POLYCACHE_LATENCY_BUCKETS];
    polycache_breaker_stats breaker;
    CHECK_ERR(polycache_cache_op_stats(cache, POLYCACHE_STATS_OPERATIONS, &op, &err), POLYCACHE_RESULT_CONFIGURATION,
              err, "unknown operation");
    CHECK_ERR(polycache_cache_op_latency(cache, 1000, buckets, POLYCACHE_LATENCY_BUCKETS, &err),
              POLYCACHE_RESULT_CONFIGURATION, err, "unknown operation");
    CHECK_RC(polycache_cache_op_latency(cache, POLYCACHE_STATS_OP_GET, buckets, POLYCACHE_LATENCY_BUCKETS - 1, &err),
             POLYCACHE_RESULT_BUFFER_TOO_SMALL, err);
    CHECK_RC(polycache_cache_op_stats(NULL, POLYCACHE_STATS_OP_GET, &op, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_op_stats(cache, POLYCACHE_STATS_OP_GET, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_op_latency(cache, POLYCACHE_STATS_OP_GET, NULL, POLYCACHE_LATENCY_BUCKETS, &err),
             POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_breaker_stats(NULL, &breaker, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_breaker_stats(cache, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    polycache_cache_free(cache);
}

int main(void) {
    test_counts_and_histograms();
    test_bounds_and_names();
    test_bad_arguments();
    return check_summary();
}
