/*
 * Tests of the polycache C API: every function, its results, its ownership rules and its
 * NULL handling. Run by tests/c/run.sh under valgrind; prints "N passed, M failed" last and
 * exits non-zero when anything failed.
 */

#include "check.h"

#include <unistd.h>

static void test_version_and_names(void) {
    const char *version = polycache_version();
    CHECK(version != NULL && strlen(version) > 0);
    CHECK(strcmp(polycache_result_name(POLYCACHE_RESULT_OK), "ok") == 0);
    CHECK(strcmp(polycache_result_name(POLYCACHE_RESULT_MISS), "miss") == 0);
    CHECK(strcmp(polycache_result_name(POLYCACHE_RESULT_NOT_FOUND), "not_found") == 0);
    CHECK(strcmp(polycache_result_name(POLYCACHE_RESULT_VALUE_TOO_LARGE), "value_too_large") == 0);
    CHECK(strcmp(polycache_result_name(9999), "unknown") == 0);
}

static void test_get_set(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;

    /* A miss is a code, leaves the out-param alone and produces no error. */
    polycache_value *sentinel = (polycache_value *)&err;
    polycache_value *value = sentinel;
    CHECK_RC(polycache_cache_get(cache, "absent", &value, &err), POLYCACHE_RESULT_MISS, err);
    CHECK(value == sentinel);

    /* Bytes with embedded NULs come back whole. */
    const uint8_t bytes[] = {'a', 0, 'b', 0, 0, 'c'};
    CHECK_RC(polycache_cache_set(cache, "bin", bytes, sizeof bytes, POLYCACHE_TTL_NEVER, &err),
             POLYCACHE_RESULT_OK, err);
    value = NULL;
    CHECK_RC(polycache_cache_get(cache, "bin", &value, &err), POLYCACHE_RESULT_OK, err);
    CHECK(value != NULL);
    CHECK(polycache_value_len(value) == sizeof bytes);
    CHECK(memcmp(polycache_value_data(value), bytes, sizeof bytes) == 0);

    /* A value is a snapshot: overwriting the key does not change it. */
    CHECK(set_str(cache, "bin", "new", POLYCACHE_TTL_NEVER));
    CHECK(polycache_value_len(value) == sizeof bytes);
    polycache_value_free(value);
    CHECK(holds(cache, "bin", "new", 3));

    /* An empty value: NULL data allowed with length 0; read back as a non-NULL pointer. */
    CHECK_RC(polycache_cache_set(cache, "empty", NULL, 0, POLYCACHE_TTL_NEVER, &err), POLYCACHE_RESULT_OK,
             err);
    value = NULL;
    CHECK_RC(polycache_cache_get(cache, "empty", &value, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_value_len(value) == 0);
    CHECK(polycache_value_data(value) != NULL);
    polycache_value_free(value);

    /* Success leaves error_out alone. */
    polycache_error *untouched = (polycache_error *)&value;
    polycache_error *err2 = untouched;
    CHECK(polycache_cache_set(cache, "k", (const uint8_t *)"v", 1, POLYCACHE_TTL_DEFAULT, &err2) ==
          POLYCACHE_RESULT_OK);
    CHECK(err2 == untouched);
    err2 = untouched;
    CHECK(polycache_cache_get(cache, "nope", &value, &err2) == POLYCACHE_RESULT_MISS);
    CHECK(err2 == untouched);

    /* A key longer than the core allows is an INVALID_KEY error. */
    size_t long_len = 70 * 1024;
    char *long_key = malloc(long_len + 1);
    CHECK(long_key != NULL);
    if (long_key != NULL) {
        memset(long_key, 'k', long_len);
        long_key[long_len] = '\0';
        CHECK_RC(polycache_cache_set(cache, long_key, (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, &err),
                 POLYCACHE_RESULT_INVALID_KEY, err);
        free(long_key);
    }

    polycache_cache_free(cache);
}

static void test_get_into(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    uint8_t buf[8];
    size_t len = 12345;

    CHECK_RC(polycache_cache_get_into(cache, "absent", buf, sizeof buf, &len, &err), POLYCACHE_RESULT_MISS,
             err);
    CHECK(len == 12345);

    CHECK(set_str(cache, "k", "abc", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_get_into(cache, "k", buf, sizeof buf, &len, &err), POLYCACHE_RESULT_OK, err);
    CHECK(len == 3 && memcmp(buf, "abc", 3) == 0);

    /* Too small: nothing is written, and the message gives the size. */
    memset(buf, 'x', sizeof buf);
    len = 12345;
    CHECK(set_str(cache, "big", "0123456789", POLYCACHE_TTL_NEVER));
    CHECK(polycache_cache_get_into(cache, "big", buf, sizeof buf, &len, &err) ==
          POLYCACHE_RESULT_BUFFER_TOO_SMALL);
    CHECK(err != NULL && polycache_error_result(err) == POLYCACHE_RESULT_BUFFER_TOO_SMALL);
    CHECK(err != NULL && strstr(polycache_error_message(err), "10 bytes") != NULL);
    polycache_error_free(err);
    err = NULL;
    CHECK(len == 12345 && buf[0] == 'x' && buf[7] == 'x');

    /* An empty value fits a NULL buffer of capacity 0. */
    CHECK_RC(polycache_cache_set(cache, "empty", NULL, 0, POLYCACHE_TTL_NEVER, &err), POLYCACHE_RESULT_OK,
             err);
    CHECK_RC(polycache_cache_get_into(cache, "empty", NULL, 0, &len, &err), POLYCACHE_RESULT_OK, err);
    CHECK(len == 0);

    polycache_cache_free(cache);
}

static void test_ttl(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;

    CHECK(set_str(cache, "never", "v", POLYCACHE_TTL_NEVER));
    CHECK(set_str(cache, "default", "v", POLYCACHE_TTL_DEFAULT)); /* 300 s */
    CHECK(set_str(cache, "short", "v", 100));
    CHECK(holds(cache, "short", "v", 1));
    sleep_ms(300);
    CHECK(is_miss(cache, "short"));
    CHECK(holds(cache, "never", "v", 1));
    CHECK(holds(cache, "default", "v", 1));

    /* 0 is already expired: stores nothing and removes the old value (as Django). */
    CHECK(set_str(cache, "gone", "old", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_set(cache, "gone", (const uint8_t *)"new", 3, 0, &err), POLYCACHE_RESULT_OK, err);
    CHECK(is_miss(cache, "gone"));
    /* So is any other negative number. */
    CHECK(set_str(cache, "gone2", "old", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_set(cache, "gone2", (const uint8_t *)"new", 3, -5, &err), POLYCACHE_RESULT_OK,
             err);
    CHECK(is_miss(cache, "gone2"));
    polycache_cache_free(cache);

    /* POLYCACHE_TTL_DEFAULT uses the cache's own timeout (here 0.1 s from the URL). */
    polycache_cache *quick = open_cache("memory://?timeout=0.1");
    CHECK(set_str(quick, "d", "v", POLYCACHE_TTL_DEFAULT));
    CHECK(set_str(quick, "n", "v", POLYCACHE_TTL_NEVER));
    CHECK(holds(quick, "d", "v", 1));
    sleep_ms(300);
    CHECK(is_miss(quick, "d"));
    CHECK(holds(quick, "n", "v", 1));
    polycache_cache_free(quick);
}

static void test_add_delete_has_key_touch(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    bool flag = false;

    CHECK_RC(polycache_cache_add(cache, "a", (const uint8_t *)"first", 5, POLYCACHE_TTL_NEVER, &flag, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    flag = true;
    CHECK_RC(polycache_cache_add(cache, "a", (const uint8_t *)"second", 6, POLYCACHE_TTL_NEVER, &flag, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(flag == false);
    CHECK(holds(cache, "a", "first", 5));

    CHECK_RC(polycache_cache_has_key(cache, "a", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK_RC(polycache_cache_has_key(cache, "b", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == false);

    CHECK_RC(polycache_cache_delete(cache, "a", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK_RC(polycache_cache_delete(cache, "a", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == false);
    CHECK(is_miss(cache, "a"));

    /* touch gives a present key a new TTL; an absent key answers false. */
    CHECK(set_str(cache, "t", "v", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_touch(cache, "t", 100, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK_RC(polycache_cache_touch(cache, "absent", 100, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == false);
    sleep_ms(300);
    CHECK(is_miss(cache, "t"));
    /* touch with 0 removes the key. */
    CHECK(set_str(cache, "t0", "v", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_touch(cache, "t0", 0, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK(is_miss(cache, "t0"));

    polycache_cache_free(cache);
}

static void test_lifetime(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    bool flag = false;
    int64_t ms = 0;
    int64_t n = 0;

    /* ttl: MISS for a missing key (django-redis answers 0), NEVER, or the milliseconds left. */
    CHECK_RC(polycache_cache_ttl(cache, "absent", &ms, &err), POLYCACHE_RESULT_MISS, err);
    CHECK(ms == 0);
    CHECK(set_str(cache, "k", "v", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_ttl(cache, "k", &ms, &err), POLYCACHE_RESULT_OK, err);
    CHECK(ms == POLYCACHE_TTL_NEVER);
    CHECK_RC(polycache_cache_touch(cache, "k", 600000, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_ttl(cache, "k", &ms, &err), POLYCACHE_RESULT_OK, err);
    CHECK(ms > 0 && ms <= 600000);
    CHECK_RC(polycache_cache_persist(cache, "k", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK_RC(polycache_cache_ttl(cache, "k", &ms, &err), POLYCACHE_RESULT_OK, err);
    CHECK(ms == POLYCACHE_TTL_NEVER);
    CHECK_RC(polycache_cache_persist(cache, "absent", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == false);

    /* expire_at: a time ahead sets the TTL; a time past removes the key. */
    int64_t now_ms = (int64_t)time(NULL) * 1000;
    CHECK_RC(polycache_cache_expire_at(cache, "k", now_ms + 600000, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK_RC(polycache_cache_ttl(cache, "k", &ms, &err), POLYCACHE_RESULT_OK, err);
    CHECK(ms > 0 && ms <= 601000);
    CHECK_RC(polycache_cache_expire_at(cache, "k", now_ms - 5000, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK(is_miss(cache, "k"));
    CHECK_RC(polycache_cache_expire_at(cache, "k", -1, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == false);

    /* replace (set xx): only over a present key; an already-expired TTL removes it. */
    CHECK_RC(polycache_cache_replace(cache, "r", (const uint8_t *)"x", 1, POLYCACHE_TTL_NEVER, &flag, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(flag == false);
    CHECK(is_miss(cache, "r"));
    CHECK(set_str(cache, "r", "old", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_replace(cache, "r", (const uint8_t *)"new", 3, 600000, &flag, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK(holds(cache, "r", "new", 3));
    CHECK_RC(polycache_cache_replace(cache, "r", (const uint8_t *)"x", 1, 0, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK(is_miss(cache, "r"));

    /* incr_or_create: a missing key starts from 0. */
    CHECK_RC(polycache_cache_incr_or_create(cache, "c", 5, &n, &err), POLYCACHE_RESULT_OK, err);
    CHECK(n == 5);
    CHECK_RC(polycache_cache_incr_or_create(cache, "c", -2, &n, &err), POLYCACHE_RESULT_OK, err);
    CHECK(n == 3);
    CHECK(holds(cache, "c", "3", 1));
    CHECK(set_str(cache, "word", "abc", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_incr_or_create(cache, "word", 1, &n, &err), POLYCACHE_RESULT_NOT_AN_INTEGER, err);
    CHECK(n == 3);

    /* NULL arguments name the parameter, never crash. */
    CHECK_RC(polycache_cache_ttl(NULL, "k", &ms, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_ttl(cache, NULL, &ms, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_ttl(cache, "k", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_persist(cache, "k", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_expire_at(cache, NULL, 0, &flag, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_replace(cache, "k", NULL, 1, 0, &flag, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_incr_or_create(cache, "k", 1, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);

    polycache_cache_free(cache);
}

static void test_incr_decr(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    int64_t n = 0;

    CHECK(set_str(cache, "n", "41", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_incr(cache, "n", 1, &n, &err), POLYCACHE_RESULT_OK, err);
    CHECK(n == 42);
    CHECK_RC(polycache_cache_decr(cache, "n", 50, &n, &err), POLYCACHE_RESULT_OK, err);
    CHECK(n == -8);
    CHECK(holds(cache, "n", "-8", 2));

    /* A missing key is NOT_FOUND, with a message; value_out is left alone. */
    n = 7;
    CHECK(polycache_cache_incr(cache, "missing", 1, &n, &err) == POLYCACHE_RESULT_NOT_FOUND);
    CHECK(err != NULL && polycache_error_result(err) == POLYCACHE_RESULT_NOT_FOUND);
    CHECK(err != NULL && strlen(polycache_error_message(err)) > 0);
    polycache_error_free(err);
    err = NULL;
    CHECK(n == 7);
    CHECK_RC(polycache_cache_decr(cache, "missing", 1, &n, &err), POLYCACHE_RESULT_NOT_FOUND, err);
    CHECK(is_miss(cache, "missing"));

    CHECK(set_str(cache, "word", "abc", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_incr(cache, "word", 1, &n, &err), POLYCACHE_RESULT_NOT_AN_INTEGER, err);
    CHECK(n == 7);

    CHECK(set_str(cache, "max", "9223372036854775807", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_incr(cache, "max", 1, &n, &err), POLYCACHE_RESULT_OVERFLOW, err);
    CHECK_RC(polycache_cache_decr(cache, "n", INT64_MIN, &n, &err), POLYCACHE_RESULT_OVERFLOW, err);

    polycache_cache_free(cache);
}

static void test_many(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;

    const char *keys[] = {"m1", "m2", "m3"};
    const uint8_t *values[] = {(const uint8_t *)"one", (const uint8_t *)"t\0o", NULL};
    const size_t lens[] = {3, 3, 0};
    CHECK_RC(polycache_cache_set_many(cache, keys, values, lens, 3, POLYCACHE_TTL_NEVER, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(holds(cache, "m2", "t\0o", 3));

    const char *lookup[] = {"m1", "absent", "m2", "m3"};
    polycache_value *got[4] = {NULL, NULL, NULL, NULL};
    CHECK_RC(polycache_cache_get_many(cache, lookup, 4, got, &err), POLYCACHE_RESULT_OK, err);
    CHECK(got[0] != NULL && polycache_value_len(got[0]) == 3 &&
          memcmp(polycache_value_data(got[0]), "one", 3) == 0);
    CHECK(got[1] == NULL);
    CHECK(got[2] != NULL && polycache_value_len(got[2]) == 3 &&
          memcmp(polycache_value_data(got[2]), "t\0o", 3) == 0);
    CHECK(got[3] != NULL && polycache_value_len(got[3]) == 0);
    for (size_t i = 0; i < 4; i++) {
        polycache_value_free(got[i]);
    }

    /* All misses is still OK, with NULL in every slot. */
    const char *absent[] = {"x", "y"};
    polycache_value *none[2] = {(polycache_value *)&err, (polycache_value *)&err};
    CHECK_RC(polycache_cache_get_many(cache, absent, 2, none, &err), POLYCACHE_RESULT_OK, err);
    CHECK(none[0] == NULL && none[1] == NULL);

    /* n == 0 takes NULL arrays. */
    size_t deleted = 99;
    CHECK_RC(polycache_cache_get_many(cache, NULL, 0, NULL, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_set_many(cache, NULL, NULL, NULL, 0, POLYCACHE_TTL_NEVER, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_delete_many(cache, NULL, 0, &deleted, &err), POLYCACHE_RESULT_OK, err);
    CHECK(deleted == 0);

    const char *doomed[] = {"m1", "m3", "never-there"};
    CHECK_RC(polycache_cache_delete_many(cache, doomed, 3, &deleted, &err), POLYCACHE_RESULT_OK, err);
    CHECK(deleted == 2);
    CHECK(is_miss(cache, "m1") && is_miss(cache, "m3"));
    CHECK(holds(cache, "m2", "t\0o", 3));

    /* set_many with an expired TTL removes the keys. */
    const char *expire[] = {"m2"};
    const uint8_t *expire_values[] = {(const uint8_t *)"z"};
    const size_t expire_lens[] = {1};
    CHECK_RC(polycache_cache_set_many(cache, expire, expire_values, expire_lens, 1, 0, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(is_miss(cache, "m2"));

    polycache_cache_free(cache);
}

static void test_clear_and_named_stores(void) {
    polycache_cache *a = open_cache("memory://shared-store");
    polycache_cache *b = open_cache("memory://shared-store");
    polycache_error *err = NULL;

    CHECK(set_str(a, "x", "1", POLYCACHE_TTL_NEVER));
    CHECK(set_str(a, "y", "2", POLYCACHE_TTL_NEVER));
    CHECK(holds(b, "x", "1", 1)); /* one named store, two handles */
    CHECK_RC(polycache_cache_clear(b, &err), POLYCACHE_RESULT_OK, err);
    CHECK(is_miss(a, "x") && is_miss(a, "y"));

    polycache_cache_free(a);
    polycache_cache_free(b);
}

static void test_stats(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    polycache_stats stats;
    memset(&stats, 0xff, sizeof stats);

    CHECK_RC(polycache_cache_stats(cache, &stats, &err), POLYCACHE_RESULT_OK, err);
    CHECK(stats.hits == 0 && stats.misses == 0 && stats.sets == 0 && stats.deletes == 0 &&
          stats.errors == 0 && stats.evictions == 0 && stats.stale_hits == 0 && stats.refreshes == 0);

    bool flag;
    int64_t n;
    CHECK(set_str(cache, "a", "1", POLYCACHE_TTL_NEVER));              /* sets 1 */
    CHECK(set_str(cache, "b", "2", POLYCACHE_TTL_NEVER));              /* sets 2 */
    CHECK(holds(cache, "a", "1", 1));                                  /* hits 1 */
    CHECK(is_miss(cache, "zz"));                                       /* misses 1 */
    const char *keys[] = {"a", "b", "nope"};
    polycache_value *vals[3];
    CHECK(polycache_cache_get_many(cache, keys, 3, vals, NULL) == POLYCACHE_RESULT_OK); /* hits 3, misses 2 */
    for (int i = 0; i < 3; i++) {
        polycache_value_free(vals[i]);
    }
    CHECK(polycache_cache_incr(cache, "a", 1, &n, NULL) == POLYCACHE_RESULT_OK); /* sets 3 */
    CHECK(polycache_cache_delete(cache, "b", &flag, NULL) == POLYCACHE_RESULT_OK); /* deletes 1 */
    CHECK(polycache_cache_delete(cache, "b", &flag, NULL) == POLYCACHE_RESULT_OK); /* absent: not counted */

    CHECK_RC(polycache_cache_stats(cache, &stats, &err), POLYCACHE_RESULT_OK, err);
    CHECK(stats.hits == 3);
    CHECK(stats.misses == 2);
    CHECK(stats.sets == 3);
    CHECK(stats.deletes == 1);
    CHECK(stats.errors == 0);
    CHECK(stats.evictions == 0);

    /* A bounded cache counts its evictions. */
    polycache_cache *small = open_cache("memory://?max_entries=10");
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK(set_str(small, key, "v", POLYCACHE_TTL_NEVER));
    }
    CHECK_RC(polycache_cache_stats(small, &stats, &err), POLYCACHE_RESULT_OK, err);
    CHECK(stats.sets == 200);
    CHECK(stats.evictions > 0);
    polycache_cache_free(small);

    polycache_cache_free(cache);
}

static void test_bad_urls(void) {
    polycache_error *err = NULL;
    polycache_cache *sentinel = (polycache_cache *)&err;
    polycache_cache *cache = sentinel;

    CHECK(polycache_cache_open("nosuch://x", &cache, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(cache == sentinel);
    CHECK(err != NULL && polycache_error_result(err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(err != NULL && strstr(polycache_error_message(err), "nosuch") != NULL);
    polycache_error_free(err);
    err = NULL;

    CHECK(polycache_cache_open("memory://?max_entries=-1", &cache, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(cache == sentinel);
    CHECK(err != NULL && strstr(polycache_error_message(err), "max_entries") != NULL);
    CHECK(err != NULL && strstr(polycache_error_message(err), "-1") != NULL);
    polycache_error_free(err);
    err = NULL;

    CHECK(polycache_cache_open("memory://?no_such_option=1", &cache, &err) ==
          POLYCACHE_RESULT_CONFIGURATION);
    CHECK(err != NULL && strstr(polycache_error_message(err), "no_such_option") != NULL);
    polycache_error_free(err);
    err = NULL;

    /* Without error_out the code alone comes back. */
    CHECK(polycache_cache_open("nosuch://x", &cache, NULL) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(cache == sentinel);
}

static void test_value_too_large(void) {
    polycache_cache *cache = open_cache("memory://?max_value_size=16");
    polycache_error *err = NULL;
    const uint8_t big[17] = "0123456789abcdef";
    bool flag = true;

    CHECK_RC(polycache_cache_set(cache, "fits", big, 16, POLYCACHE_TTL_NEVER, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_cache_set(cache, "big", big, 17, POLYCACHE_TTL_NEVER, &err) ==
          POLYCACHE_RESULT_VALUE_TOO_LARGE);
    CHECK(err != NULL && strstr(polycache_error_message(err), "max_value_size") != NULL);
    polycache_error_free(err);
    err = NULL;
    CHECK(is_miss(cache, "big"));

    /* Overwriting with a value too large keeps the old value. */
    CHECK_RC(polycache_cache_set(cache, "fits", big, 17, POLYCACHE_TTL_NEVER, &err),
             POLYCACHE_RESULT_VALUE_TOO_LARGE, err);
    CHECK(holds(cache, "fits", big, 16));

    CHECK_RC(polycache_cache_add(cache, "big", big, 17, POLYCACHE_TTL_NEVER, &flag, &err),
             POLYCACHE_RESULT_VALUE_TOO_LARGE, err);
    CHECK(flag == true); /* not written on failure */
    CHECK(is_miss(cache, "big"));

    /* set_many with one value too large stores none of them. */
    const char *keys[] = {"s1", "s2"};
    const uint8_t *values[] = {big, big};
    const size_t lens[] = {1, 17};
    CHECK_RC(polycache_cache_set_many(cache, keys, values, lens, 2, POLYCACHE_TTL_NEVER, &err),
             POLYCACHE_RESULT_VALUE_TOO_LARGE, err);
    CHECK(is_miss(cache, "s1") && is_miss(cache, "s2"));

    polycache_stats stats;
    CHECK(polycache_cache_stats(cache, &stats, NULL) == POLYCACHE_RESULT_OK);
    CHECK(stats.sets == 1);
    polycache_cache_free(cache);
}

/* Expects NULL_PARAMETER and an error whose message names `param`. */
#define CHECK_NULL(call, param) check_null((call), &err, param, #call, __LINE__)

static void check_null(polycache_result got, polycache_error **err, const char *param, const char *what,
                       int line) {
    int ok = got == POLYCACHE_RESULT_NULL_PARAMETER && *err != NULL &&
             polycache_error_result(*err) == POLYCACHE_RESULT_NULL_PARAMETER &&
             strstr(polycache_error_message(*err), param) != NULL;
    if (ok) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "%s:%d: FAILED: %s returned %s (%s), expected null_parameter naming %s\n", __FILE__,
                line, what, polycache_result_name(got), polycache_error_message(*err), param);
    }
    polycache_error_free(*err);
    *err = NULL;
}

static void test_null_parameters(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    polycache_cache *c = NULL;
    polycache_value *v = NULL;
    polycache_stats stats;
    bool flag;
    int64_t n;
    size_t len;
    uint8_t buf[4];
    const uint8_t *data = (const uint8_t *)"x";

    CHECK(set_str(cache, "k", "1", POLYCACHE_TTL_NEVER));

    CHECK_NULL(polycache_cache_open(NULL, &c, &err), "url");
    CHECK_NULL(polycache_cache_open("memory://", NULL, &err), "cache_out");

    CHECK_NULL(polycache_cache_get(NULL, "k", &v, &err), "cache");
    CHECK_NULL(polycache_cache_get(cache, NULL, &v, &err), "key");
    CHECK_NULL(polycache_cache_get(cache, "k", NULL, &err), "value_out");

    CHECK_NULL(polycache_cache_get_into(NULL, "k", buf, sizeof buf, &len, &err), "cache");
    CHECK_NULL(polycache_cache_get_into(cache, NULL, buf, sizeof buf, &len, &err), "key");
    CHECK_NULL(polycache_cache_get_into(cache, "k", NULL, sizeof buf, &len, &err), "buf");
    CHECK_NULL(polycache_cache_get_into(cache, "k", buf, sizeof buf, NULL, &err), "len_out");

    CHECK_NULL(polycache_cache_set(NULL, "k", data, 1, POLYCACHE_TTL_NEVER, &err), "cache");
    CHECK_NULL(polycache_cache_set(cache, NULL, data, 1, POLYCACHE_TTL_NEVER, &err), "key");
    CHECK_NULL(polycache_cache_set(cache, "k", NULL, 1, POLYCACHE_TTL_NEVER, &err), "value");

    CHECK_NULL(polycache_cache_add(NULL, "k", data, 1, POLYCACHE_TTL_NEVER, &flag, &err), "cache");
    CHECK_NULL(polycache_cache_add(cache, NULL, data, 1, POLYCACHE_TTL_NEVER, &flag, &err), "key");
    CHECK_NULL(polycache_cache_add(cache, "k", NULL, 1, POLYCACHE_TTL_NEVER, &flag, &err), "value");
    CHECK_NULL(polycache_cache_add(cache, "new", data, 1, POLYCACHE_TTL_NEVER, NULL, &err), "stored_out");
    CHECK(is_miss(cache, "new")); /* checked before anything is done */

    CHECK_NULL(polycache_cache_delete(NULL, "k", &flag, &err), "cache");
    CHECK_NULL(polycache_cache_delete(cache, NULL, &flag, &err), "key");
    CHECK_NULL(polycache_cache_delete(cache, "k", NULL, &err), "deleted_out");
    CHECK(holds(cache, "k", "1", 1));

    CHECK_NULL(polycache_cache_has_key(NULL, "k", &flag, &err), "cache");
    CHECK_NULL(polycache_cache_has_key(cache, NULL, &flag, &err), "key");
    CHECK_NULL(polycache_cache_has_key(cache, "k", NULL, &err), "present_out");

    CHECK_NULL(polycache_cache_touch(NULL, "k", 100, &flag, &err), "cache");
    CHECK_NULL(polycache_cache_touch(cache, NULL, 100, &flag, &err), "key");
    CHECK_NULL(polycache_cache_touch(cache, "k", 0, NULL, &err), "touched_out");
    CHECK(holds(cache, "k", "1", 1));

    CHECK_NULL(polycache_cache_incr(NULL, "k", 1, &n, &err), "cache");
    CHECK_NULL(polycache_cache_incr(cache, NULL, 1, &n, &err), "key");
    CHECK_NULL(polycache_cache_incr(cache, "k", 1, NULL, &err), "value_out");
    CHECK_NULL(polycache_cache_decr(NULL, "k", 1, &n, &err), "cache");
    CHECK_NULL(polycache_cache_decr(cache, NULL, 1, &n, &err), "key");
    CHECK_NULL(polycache_cache_decr(cache, "k", 1, NULL, &err), "value_out");
    CHECK(holds(cache, "k", "1", 1));

    const char *keys[] = {"k", "j"};
    const char *keys_with_null[] = {"k", NULL};
    const uint8_t *values[] = {data, data};
    const uint8_t *values_with_null[] = {data, NULL};
    const size_t lens[] = {1, 1};
    polycache_value *vals[2];
    CHECK_NULL(polycache_cache_get_many(NULL, keys, 2, vals, &err), "cache");
    CHECK_NULL(polycache_cache_get_many(cache, NULL, 2, vals, &err), "keys");
    CHECK_NULL(polycache_cache_get_many(cache, keys_with_null, 2, vals, &err), "keys[i]");
    CHECK_NULL(polycache_cache_get_many(cache, keys, 2, NULL, &err), "values_out");

    CHECK_NULL(polycache_cache_set_many(NULL, keys, values, lens, 2, POLYCACHE_TTL_NEVER, &err), "cache");
    CHECK_NULL(polycache_cache_set_many(cache, NULL, values, lens, 2, POLYCACHE_TTL_NEVER, &err), "keys");
    CHECK_NULL(polycache_cache_set_many(cache, keys_with_null, values, lens, 2, POLYCACHE_TTL_NEVER, &err),
               "keys[i]");
    CHECK_NULL(polycache_cache_set_many(cache, keys, NULL, lens, 2, POLYCACHE_TTL_NEVER, &err), "values");
    CHECK_NULL(polycache_cache_set_many(cache, keys, values_with_null, lens, 2, POLYCACHE_TTL_NEVER, &err),
               "values[i]");
    CHECK_NULL(polycache_cache_set_many(cache, keys, values, NULL, 2, POLYCACHE_TTL_NEVER, &err), "lens");
    CHECK(is_miss(cache, "j")); /* nothing stored */

    CHECK_NULL(polycache_cache_delete_many(NULL, keys, 2, &len, &err), "cache");
    CHECK_NULL(polycache_cache_delete_many(cache, NULL, 2, &len, &err), "keys");
    CHECK_NULL(polycache_cache_delete_many(cache, keys_with_null, 2, &len, &err), "keys[i]");
    CHECK_NULL(polycache_cache_delete_many(cache, keys, 2, NULL, &err), "deleted_out");
    CHECK(holds(cache, "k", "1", 1));

    CHECK_NULL(polycache_cache_clear(NULL, &err), "cache");
    CHECK_NULL(polycache_cache_stats(NULL, &stats, &err), "cache");
    CHECK_NULL(polycache_cache_stats(cache, NULL, &err), "stats_out");
    CHECK(holds(cache, "k", "1", 1));

    /* Without error_out, NULL arguments still give the code. */
    CHECK(polycache_cache_get(NULL, NULL, NULL, NULL) == POLYCACHE_RESULT_NULL_PARAMETER);

    /* Accessors and _free take NULL without crashing. */
    CHECK(polycache_value_data(NULL) == NULL);
    CHECK(polycache_value_len(NULL) == 0);
    CHECK(polycache_error_result(NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_error_message(NULL) != NULL && polycache_error_message(NULL)[0] == '\0');
    polycache_cache_free(NULL);
    polycache_value_free(NULL);
    polycache_error_free(NULL);
    passed++; /* survived the _free(NULL) calls */

    polycache_cache_free(cache);
}

static void test_invalid_utf8(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    polycache_value *v = NULL;
    polycache_cache *c = NULL;
    const char bad_key[] = {'k', (char)0xff, (char)0xfe, '\0'};

    CHECK(polycache_cache_set(cache, bad_key, (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, &err) ==
          POLYCACHE_RESULT_INVALID_UTF8);
    CHECK(err != NULL && strstr(polycache_error_message(err), "key") != NULL);
    polycache_error_free(err);
    err = NULL;
    CHECK_RC(polycache_cache_get(cache, bad_key, &v, &err), POLYCACHE_RESULT_INVALID_UTF8, err);
    const char *keys[] = {"fine", bad_key};
    polycache_value *vals[2];
    CHECK_RC(polycache_cache_get_many(cache, keys, 2, vals, &err), POLYCACHE_RESULT_INVALID_UTF8, err);
    CHECK_RC(polycache_cache_open("memory://\xff", &c, &err), POLYCACHE_RESULT_INVALID_UTF8, err);
    /* Non-ASCII UTF-8 is a fine key. */
    CHECK(set_str(cache, "cl\xc3\xa9", "v", POLYCACHE_TTL_NEVER));
    CHECK(holds(cache, "cl\xc3\xa9", "v", 1));
    polycache_cache_free(cache);
}

#define THREADS 4
#define INCRS_PER_THREAD 5000

static void *hammer(void *arg) {
    polycache_cache *cache = arg;
    long failures = 0;
    for (int i = 0; i < INCRS_PER_THREAD; i++) {
        int64_t n;
        if (polycache_cache_incr(cache, "counter", 1, &n, NULL) != POLYCACHE_RESULT_OK) {
            failures++;
        }
        polycache_value *v = NULL;
        if (polycache_cache_get(cache, "counter", &v, NULL) != POLYCACHE_RESULT_OK) {
            failures++;
        }
        polycache_value_free(v);
    }
    return (void *)(intptr_t)failures;
}

static void test_threads(void) {
    polycache_cache *cache = open_cache("memory://");
    CHECK(set_str(cache, "counter", "0", POLYCACHE_TTL_NEVER));
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_create(&threads[i], NULL, hammer, cache) == 0);
    }
    long failures = 0;
    for (int i = 0; i < THREADS; i++) {
        void *ret = NULL;
        CHECK(pthread_join(threads[i], &ret) == 0);
        failures += (long)(intptr_t)ret;
    }
    CHECK(failures == 0);
    char want[32];
    int len = snprintf(want, sizeof want, "%d", THREADS * INCRS_PER_THREAD);
    CHECK(holds(cache, "counter", want, (size_t)len));
    polycache_stats stats;
    CHECK(polycache_cache_stats(cache, &stats, NULL) == POLYCACHE_RESULT_OK);
    CHECK(stats.sets == 1 + THREADS * INCRS_PER_THREAD);
    CHECK(stats.hits == THREADS * INCRS_PER_THREAD + 1);
    polycache_cache_free(cache);
}

/* --- get_or_set_with, loaders, refresh stats, Prometheus text ------------------------------ */

/* What a test loader does, passed as user_data. */
typedef struct {
    int calls;              /* loader calls (atomically incremented when shared by threads) */
    polycache_result code;  /* what the loader returns */
    int set_value;          /* whether it calls polycache_loader_output_set */
    long sleep_ms;          /* how long it "computes" */
} loader_state;

static polycache_result test_loader(void *user_data, const char *key, polycache_loader_output *output) {
    loader_state *state = user_data;
    __atomic_fetch_add(&state->calls, 1, __ATOMIC_SEQ_CST);
    if (state->sleep_ms > 0) {
        sleep_ms(state->sleep_ms);
    }
    if (state->set_value) {
        /* A buffer the loader owns and frees: polycache copies the bytes. */
        size_t len = strlen(key) + 9;
        char *buf = malloc(len + 1);
        snprintf(buf, len + 1, "computed:%s", key);
        polycache_result rc = polycache_loader_output_set(output, (const uint8_t *)buf, len, NULL);
        free(buf);
        if (rc != POLYCACHE_RESULT_OK) {
            return rc;
        }
    }
    return state->code;
}

static void test_get_or_set_with(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    loader_state state = {0, POLYCACHE_RESULT_OK, 1, 0};

    polycache_value *value = NULL;
    CHECK_RC(polycache_cache_get_or_set_with(cache, "k", test_loader, &state, POLYCACHE_TTL_NEVER, &value, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(state.calls == 1);
    CHECK(value != NULL && polycache_value_len(value) == 10 &&
          memcmp(polycache_value_data(value), "computed:k", 10) == 0);
    polycache_value_free(value);
    /* Stored: a plain get sees it, and a second call does not run the loader. */
    CHECK(holds(cache, "k", "computed:k", 10));
    value = NULL;
    CHECK_RC(polycache_cache_get_or_set_with(cache, "k", test_loader, &state, POLYCACHE_TTL_NEVER, &value, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(state.calls == 1);
    polycache_value_free(value);

    /* A failing loader: its code is reported in the message, nothing is stored, value_out untouched. */
    loader_state failing = {0, POLYCACHE_RESULT_IO, 1, 0};
    polycache_value *sentinel = (polycache_value *)&err;
    value = sentinel;
    polycache_result rc =
        polycache_cache_get_or_set_with(cache, "bad", test_loader, &failing, POLYCACHE_TTL_NEVER, &value, &err);
    CHECK(rc == POLYCACHE_RESULT_LOADER_FAILED);
    CHECK(strcmp(polycache_result_name(rc), "loader_failed") == 0);
    CHECK(err != NULL && strstr(polycache_error_message(err), "io") != NULL);
    polycache_error_free(err);
    err = NULL;
    CHECK(value == sentinel);
    CHECK(is_miss(cache, "bad"));

    /* OK without a value is a failure too. */
    loader_state empty = {0, POLYCACHE_RESULT_OK, 0, 0};
    CHECK_RC(polycache_cache_get_or_set_with(cache, "bad", test_loader, &empty, POLYCACHE_TTL_NEVER, &value, &err),
             POLYCACHE_RESULT_LOADER_FAILED, err);
    CHECK(value == sentinel);

    /* Already-expired TTL: the value is returned but not stored. */
    CHECK_RC(polycache_cache_get_or_set_with(cache, "gone", test_loader, &state, 0, &value, &err),
             POLYCACHE_RESULT_OK, err);
    polycache_value_free(value);
    CHECK(is_miss(cache, "gone"));

    /* NULLs. */
    value = sentinel;
    CHECK_RC(polycache_cache_get_or_set_with(cache, "k", NULL, &state, POLYCACHE_TTL_NEVER, &value, &err),
             POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_get_or_set_with(NULL, "k", test_loader, &state, POLYCACHE_TTL_NEVER, &value, &err),
             POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_get_or_set_with(cache, NULL, test_loader, &state, POLYCACHE_TTL_NEVER, &value, &err),
             POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_get_or_set_with(cache, "k", test_loader, &state, POLYCACHE_TTL_NEVER, NULL, &err),
             POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_loader_output_set(NULL, (const uint8_t *)"x", 1, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK(value == sentinel);

    polycache_stats stats;
    CHECK_RC(polycache_cache_stats(cache, &stats, &err), POLYCACHE_RESULT_OK, err);
    CHECK(stats.refreshes == 2); /* "k" and "gone" were computed */
    CHECK(stats.stale_hits == 0);
    polycache_cache_free(cache);
}

#define FLIGHT_THREADS 16

typedef struct {
    polycache_cache *cache;
    loader_state *state;
    pthread_barrier_t *barrier;
} flight_arg;

static void *flight_caller(void *arg) {
    flight_arg *a = arg;
    pthread_barrier_wait(a->barrier);
    polycache_value *value = NULL;
    polycache_result rc =
        polycache_cache_get_or_set_with(a->cache, "hot", test_loader, a->state, POLYCACHE_TTL_NEVER, &value, NULL);
    int ok = rc == POLYCACHE_RESULT_OK && polycache_value_len(value) == 12 &&
             memcmp(polycache_value_data(value), "computed:hot", 12) == 0;
    polycache_value_free(value);
    return (void *)(intptr_t)(ok ? 0 : 1);
}

static void test_single_flight_threads(void) {
    polycache_cache *cache = open_cache("memory://");
    loader_state state = {0, POLYCACHE_RESULT_OK, 1, 100};
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, FLIGHT_THREADS);
    pthread_t threads[FLIGHT_THREADS];
    flight_arg arg = {cache, &state, &barrier};
    for (int i = 0; i < FLIGHT_THREADS; i++) {
        CHECK(pthread_create(&threads[i], NULL, flight_caller, &arg) == 0);
    }
    long failures = 0;
    for (int i = 0; i < FLIGHT_THREADS; i++) {
        void *ret = NULL;
        CHECK(pthread_join(threads[i], &ret) == 0);
        failures += (long)(intptr_t)ret;
    }
    pthread_barrier_destroy(&barrier);
    CHECK(failures == 0);
    CHECK(__atomic_load_n(&state.calls, __ATOMIC_SEQ_CST) == 1); /* one loader call for all */
    polycache_stats stats;
    CHECK(polycache_cache_stats(cache, &stats, NULL) == POLYCACHE_RESULT_OK);
    CHECK(stats.refreshes == 1);
    /* Each caller looked once: a miss, or a hit when the scheduler (valgrind runs one thread
     * at a time) started it after the value was stored. */
    CHECK(stats.misses >= 1 && stats.hits + stats.misses == FLIGHT_THREADS);
    polycache_cache_free(cache);
}

static void test_stats_prometheus(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    CHECK(is_miss(cache, "absent"));
    polycache_value *text = NULL;
    CHECK_RC(polycache_cache_stats_prometheus(cache, "web", &text, &err), POLYCACHE_RESULT_OK, err);
    size_t len = polycache_value_len(text);
    char *page = malloc(len + 1);
    memcpy(page, polycache_value_data(text), len);
    page[len] = '\0';
    polycache_value_free(text);
    CHECK(strstr(page, "# TYPE polycache_misses_total counter\n") != NULL);
    CHECK(strstr(page, "polycache_misses_total{cache=\"web\"} 1\n") != NULL);
    CHECK(strstr(page, "polycache_stale_hits_total{cache=\"web\"} 0\n") != NULL);
    CHECK(strstr(page, "polycache_refreshes_total{cache=\"web\"} 0\n") != NULL);
    free(page);
    text = NULL;
    CHECK_RC(polycache_cache_stats_prometheus(cache, NULL, &text, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_stats_prometheus(cache, "web", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK(text == NULL);
    polycache_cache_free(cache);
}

#define SECRET "Pw-c-8kR2-distinctive"

/* Fails when `text` holds SECRET. */
static void check_no_secret(const char *what, const char *text) {
    if (text != NULL && strstr(text, SECRET) != NULL) {
        failed++;
        fprintf(stderr, "%s:%d: FAILED: %s shows the secret: %s\n", __FILE__, __LINE__, what, text);
    } else {
        passed++;
    }
}

static void test_secrets_never_show(void) {
    /* Port 1 on loopback: nothing listens there, so every connection is refused at once. */
    const char *urls[] = {
        "redis://:" SECRET "@127.0.0.1:1/0",
        "postgres://u:" SECRET "@127.0.0.1:1/db",
        "postgres://u@127.0.0.1:1/db?password=" SECRET,
        "memcached://u:" SECRET "@127.0.0.1:1",
        "memory://?signing_key=" SECRET "&bogus=1",
        "nosuch://:" SECRET "@host",
    };
    int errors_seen = 0;
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        polycache_cache *cache = NULL;
        polycache_error *err = NULL;
        if (polycache_cache_open(urls[i], &cache, &err) != POLYCACHE_RESULT_OK) {
            check_no_secret("open error", polycache_error_message(err));
            errors_seen++;
            polycache_error_free(err);
            continue;
        }
        polycache_value *value = NULL;
        if (polycache_cache_get(cache, "k", &value, &err) != POLYCACHE_RESULT_MISS) {
            check_no_secret("get error", polycache_error_message(err));
            errors_seen += err != NULL;
            polycache_error_free(err);
            err = NULL;
        }
        polycache_value_free(value);
        if (polycache_cache_set(cache, "k", (const uint8_t *)"v", 1, POLYCACHE_TTL_DEFAULT, &err) !=
            POLYCACHE_RESULT_OK) {
            check_no_secret("set error", polycache_error_message(err));
            polycache_error_free(err);
        }
        polycache_cache_free(cache);
    }
    CHECK(errors_seen >= 5);
}

static void test_signed_values(void) {
    polycache_cache *signer = open_cache("memory://c-signed?signing_key=k1&compress_min_size=32");
    polycache_cache *rotated = open_cache("memory://c-signed?signing_key=k2&old_signing_keys=k1");
    polycache_cache *stranger = open_cache("memory://c-signed?signing_key=other");
    polycache_cache *plain = open_cache("memory://c-signed");
    const char *long_value = "a value long enough to be compressed, compressed, compressed";
    CHECK(set_str(signer, "k", long_value, POLYCACHE_TTL_NEVER));
    CHECK(holds(signer, "k", long_value, strlen(long_value)));
    CHECK(holds(rotated, "k", long_value, strlen(long_value)));
    CHECK(is_miss(stranger, "k"));
    CHECK(is_miss(plain, "k"));
    /* Counters stay plain decimal, so incr works whatever the key. */
    int64_t n = 0;
    CHECK(set_str(signer, "n", "41", POLYCACHE_TTL_NEVER));
    CHECK(polycache_cache_incr(stranger, "n", 1, &n, NULL) == POLYCACHE_RESULT_OK && n == 42);
    polycache_cache_free(signer);
    polycache_cache_free(rotated);
    polycache_cache_free(stranger);
    polycache_cache_free(plain);
}

/* What the log callback received. */
struct log_seen {
    pthread_mutex_t lock;
    int warnings;
    int records;
    char last[512];
    char target[64];
};

static void on_log(void *user_data, polycache_log_level level, const char *target, const char *message) {
    struct log_seen *seen = user_data;
    pthread_mutex_lock(&seen->lock);
    seen->records++;
    if (level == POLYCACHE_LOG_WARN) {
        seen->warnings++;
    }
    snprintf(seen->last, sizeof seen->last, "%s", message);
    snprintf(seen->target, sizeof seen->target, "%s", target);
    pthread_mutex_unlock(&seen->lock);
}

static void test_log_callback(void) {
    polycache_error *err = NULL;
    struct log_seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
    CHECK_RC(polycache_set_log_callback(on_log, &seen, 99, &err), POLYCACHE_RESULT_CONFIGURATION, err);
    CHECK_RC(polycache_set_log_callback(on_log, &seen, POLYCACHE_LOG_WARN, &err), POLYCACHE_RESULT_OK, err);
    polycache_cache *signer = open_cache("memory://c-log?signing_key=k1");
    polycache_cache *checker = open_cache("memory://c-log?signing_key=" SECRET);
    CHECK(set_str(signer, "k", "v", POLYCACHE_TTL_NEVER));
    /* A value failing its signature check: a miss, and one warning naming the key, not the key's secret. */
    CHECK(is_miss(checker, "k"));
    CHECK(seen.warnings == 1);
    CHECK(strstr(seen.last, ":1:k") != NULL && strstr(seen.last, "signature") != NULL);
    CHECK(strstr(seen.last, SECRET) == NULL);
    CHECK(strcmp(seen.target, "polycache::cache") == 0);
    /* Off: no more calls, and `seen` may go away once it returns. */
    CHECK_RC(polycache_set_log_callback(NULL, NULL, POLYCACHE_LOG_WARN, &err), POLYCACHE_RESULT_OK, err);
    polycache_cache *other = open_cache("memory://c-log?signing_key=another");
    CHECK(is_miss(other, "k"));
    CHECK(seen.records == 1);
    polycache_cache_free(signer);
    polycache_cache_free(checker);
    polycache_cache_free(other);
}

static void test_tiered_url(void) {
    /* Two tiered caches over one L2 store, on one in-process bus: a write through one drops
     * the other's L1 copy. */
    const char *url = "tiered://?l1=memory%3A%2F%2F&l2=memory%3A%2F%2Fc-tiered&bus=local%3Ac-bus";
    polycache_cache *a = open_cache(url);
    polycache_cache *b = open_cache(url);
    CHECK(set_str(a, "k", "old", POLYCACHE_TTL_NEVER));
    CHECK(holds(b, "k", "old", 3));
    CHECK(set_str(a, "k", "new", POLYCACHE_TTL_NEVER));
    CHECK(holds(b, "k", "new", 3));
    polycache_cache_free(a);
    polycache_cache_free(b);
}

/* A server that is not there: a connection error with the operating system's own message,
 * and nothing else breaks. Port 1 on loopback has no listener. */
static void test_dead_server(void) {
    polycache_error *err = NULL;
    polycache_cache *cache = NULL;
    polycache_value *value = NULL;
    const char *url = "redis://127.0.0.1:1/0?breaker_threshold=0&timeout=60";
    polycache_result rc = polycache_cache_open(url, &cache, &err);
    if (rc == POLYCACHE_RESULT_OK) {
        /* The backend connects lazily: the first operation fails instead. */
        rc = polycache_cache_get(cache, "k", &value, &err);
    }
    CHECK(rc == POLYCACHE_RESULT_CONNECTION);
    CHECK(value == NULL);
    CHECK(err != NULL && polycache_error_result(err) == POLYCACHE_RESULT_CONNECTION);
    /* The backend's own message is there alone, and at the end of the full message. */
    const char *backend = polycache_error_backend_message(err);
    CHECK(strlen(backend) > 0);
    CHECK(strstr(polycache_error_message(err), backend) != NULL);
    polycache_error_free(err);
    err = NULL;
    int64_t ms = 0;
    CHECK_RC(polycache_cache_ttl(cache, "k", &ms, &err), POLYCACHE_RESULT_CONNECTION, err);
    polycache_cache_free(cache);

    /* fail_open: the same dead server reads as a miss. */
    cache = open_cache("redis://127.0.0.1:1/0?fail_open=true");
    CHECK_RC(polycache_cache_get(cache, "k", &value, &err), POLYCACHE_RESULT_MISS, err);
    CHECK_RC(polycache_cache_ttl(cache, "k", &ms, &err), POLYCACHE_RESULT_MISS, err);
    /* ... and a dropped write says so, without an error object. */
    CHECK_RC(polycache_cache_set(cache, "k", (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, &err),
             POLYCACHE_RESULT_NOT_STORED, err);
    CHECK(err == NULL);
    polycache_cache_free(cache);

    /* polycache's own errors have no backend message. */
    CHECK(polycache_cache_open("memory://?max_entries=-1", &cache, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(strcmp(polycache_error_backend_message(err), "") == 0);
    polycache_error_free(err);
    CHECK(strcmp(polycache_error_backend_message(NULL), "") == 0);
}

/* polycache_create_table: Django's createcachetable for the SQL backends. */
static void test_create_table(void) {
    char dir[] = "/tmp/polycache-c-table-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char db[128];
    char url[192];
    snprintf(db, sizeof db, "%s/cache.db", dir);
    snprintf(url, sizeof url, "sqlite://%s?table=deploy_cache", db);
    polycache_error *err = NULL;

    CHECK_RC(polycache_create_table(url, &err), POLYCACHE_RESULT_OK, err);
    CHECK(access(db, F_OK) == 0);
    /* Idempotent: a second deploy step finds the table and succeeds. */
    CHECK_RC(polycache_create_table(url, &err), POLYCACHE_RESULT_OK, err);
    polycache_cache *cache = open_cache(url);
    CHECK(set_str(cache, "k", "v", POLYCACHE_TTL_NEVER));
    CHECK(holds(cache, "k", "v", 1));
    polycache_cache_free(cache);

    /* Schemes without a table and bad options are configuration errors that say why. */
    CHECK(polycache_create_table("memory://", &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(err != NULL && strstr(polycache_error_message(err), "sqlite://") != NULL);
    polycache_error_free(err);
    err = NULL;
    snprintf(url, sizeof url, "sqlite://%s?table=a;b", db);
    CHECK(polycache_create_table(url, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(err != NULL && strstr(polycache_error_message(err), "table") != NULL);
    polycache_error_free(err);
    err = NULL;
    CHECK(polycache_create_table(NULL, &err) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(err != NULL && strstr(polycache_error_message(err), "url") != NULL);
    polycache_error_free(err);

    CHECK(remove(db) == 0);
    char extra[160];
    snprintf(extra, sizeof extra, "%s-wal", db);
    remove(extra);
    snprintf(extra, sizeof extra, "%s-shm", db);
    remove(extra);
    CHECK(rmdir(dir) == 0);
}

int main(void) {
    test_version_and_names();
    test_get_set();
    test_get_into();
    test_ttl();
    test_add_delete_has_key_touch();
    test_incr_decr();
    test_lifetime();
    test_many();
    test_clear_and_named_stores();
    test_stats();
    test_bad_urls();
    test_value_too_large();
    test_null_parameters();
    test_invalid_utf8();
    test_threads();
    test_get_or_set_with();
    test_single_flight_threads();
    test_stats_prometheus();
    test_tiered_url();
    test_dead_server();
    test_secrets_never_show();
    test_signed_values();
    test_log_callback();
    test_create_table();
    return check_summary();
}
