/*
 * polycache_cache_scan_keys / polycache_key_scan_next / polycache_cache_delete_pattern:
 * glob patterns over the caller's keys, the cache's prefix and version applied (escaped)
 * and taken off; NULL parameters, a bad itersize, and a scan that outlives its cache.
 */
#include "check.h"

/* The keys a scan of `pattern` hands out, sorted, joined with commas into `out`. */
static void scan_all(polycache_cache *cache, const char *pattern, size_t itersize, char *out, size_t cap) {
    char keys[32][64];
    int n = 0;
    polycache_key_scan *scan = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_cache_scan_keys(cache, pattern, itersize, &scan, &err), POLYCACHE_RESULT_OK, err);
    polycache_value *key = NULL;
    while (n < 32 && polycache_key_scan_next(scan, &key, NULL) == POLYCACHE_RESULT_OK) {
        snprintf(keys[n++], sizeof keys[0], "%.*s", (int)polycache_value_len(key),
                 (const char *)polycache_value_data(key));
        polycache_value_free(key);
        key = NULL;
    }
    CHECK(polycache_key_scan_next(scan, &key, NULL) == POLYCACHE_RESULT_MISS);
    CHECK(key == NULL);
    polycache_key_scan_free(scan);
    qsort(keys, (size_t)n, sizeof keys[0], (int (*)(const void *, const void *))strcmp);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i > 0) {
            strncat(out, ",", cap - strlen(out) - 1);
        }
        strncat(out, keys[i], cap - strlen(out) - 1);
    }
}

static void test_patterns(void) {
    polycache_cache *cache = open_cache("memory://?key_prefix=app*");
    polycache_cache *other = open_cache("memory://?key_prefix=appX");
    const char *keys[] = {"user:1", "user:2", "user:10", "user:a*b", "team:1"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        CHECK(set_str(cache, keys[i], "v", POLYCACHE_TTL_NEVER));
    }
    CHECK(set_str(other, "user:1", "o", POLYCACHE_TTL_NEVER));
    char got[512];
    scan_all(cache, "user:*", 2, got, sizeof got);
    CHECK(strcmp(got, "user:1,user:10,user:2,user:a*b") == 0);
    scan_all(cache, "user:?", 1, got, sizeof got);
    CHECK(strcmp(got, "user:1,user:2") == 0);
    scan_all(cache, "user:a\\*b", 10, got, sizeof got);
    CHECK(strcmp(got, "user:a*b") == 0);
    scan_all(cache, "nothing*", 10, got, sizeof got);
    CHECK(strcmp(got, "") == 0);

    size_t deleted = 99;
    polycache_error *err = NULL;
    CHECK_RC(polycache_cache_delete_pattern(cache, "user:[0-9]*", 2, &deleted, &err), POLYCACHE_RESULT_OK, err);
    CHECK(deleted == 3);
    scan_all(cache, "*", 10, got, sizeof got);
    CHECK(strcmp(got, "team:1,user:a*b") == 0);
    CHECK(holds(other, "user:1", "o", 1));
    polycache_cache_free(cache);
    polycache_cache_free(other);
}

static void test_bad_input(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_key_scan *scan = NULL;
    polycache_value *key = NULL;
    polycache_error *err = NULL;
    size_t deleted = 0;
    CHECK_ERR(polycache_cache_scan_keys(NULL, "*", 10, &scan, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "cache");
    CHECK_ERR(polycache_cache_scan_keys(cache, NULL, 10, &scan, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "pattern");
    CHECK_ERR(polycache_cache_scan_keys(cache, "*", 10, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "scan_out");
    CHECK_ERR(polycache_cache_scan_keys(cache, "*", 0, &scan, &err), POLYCACHE_RESULT_INVALID_KEY, err, "itersize");
    CHECK(scan == NULL);
    CHECK_ERR(polycache_key_scan_next(NULL, &key, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "scan");
    CHECK_ERR(polycache_cache_delete_pattern(cache, "*", 10, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err,
              "deleted_out");
    CHECK_ERR(polycache_cache_delete_pattern(cache, "*", 0, &deleted, &err), POLYCACHE_RESULT_INVALID_KEY, err,
              "itersize");
    polycache_key_scan_free(NULL);
    polycache_cache_free(cache);
}

static void test_scan_outlives_its_cache(void) {
    polycache_cache *cache = open_cache("memory://");
    CHECK(set_str(cache, "k", "v", POLYCACHE_TTL_NEVER));
    polycache_key_scan *scan = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_cache_scan_keys(cache, "*", 10, &scan, &err), POLYCACHE_RESULT_OK, err);
    polycache_cache_free(cache);
    polycache_value *key = NULL;
    CHECK_RC(polycache_key_scan_next(scan, &key, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_value_len(key) == 1 && memcmp(polycache_value_data(key), "k", 1) == 0);
    polycache_value_free(key);
    polycache_key_scan_free(scan);
}

int main(void) {
    test_patterns();
    test_bad_input();
    test_scan_outlives_its_cache();
    return check_summary();
}
