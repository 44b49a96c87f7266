/*
 * Tests of typed options from C: polycache_options_new / _set_str / _set_int / _set_float /
 * _set_bool / _set_none / _free and polycache_cache_open_with_options. Options reach the
 * cache as the URL's would (its location shows them); a bad value, an unknown name or an
 * option given twice is POLYCACHE_RESULT_CONFIGURATION with a message naming the option
 * and that it was set from C; NULL arguments are POLYCACHE_RESULT_NULL_PARAMETER. Run by
 * tests/c/run.sh under valgrind and AddressSanitizer + UBSan.
 */

#include "check.h"

#include <math.h>

/* True when `err`'s message starts with `prefix`; prints the message when it does not. */
static int message_starts(polycache_error *err, const char *prefix) {
    const char *message = polycache_error_message(err);
    if (message != NULL && strncmp(message, prefix, strlen(prefix)) == 0) {
        return 1;
    }
    fprintf(stderr, "message: %s\nexpected to start with: %s\n", message ? message : "(null)", prefix);
    return 0;
}

static polycache_options *new_options(void) {
    polycache_options *options = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_options_new(&options, &err), POLYCACHE_RESULT_OK, err);
    CHECK(options != NULL);
    return options;
}

/* The milliseconds `cache` gives `key` to live after a set with the default TTL. */
static int64_t default_ttl_ms(polycache_cache *cache, const char *key) {
    polycache_error *err = NULL;
    int64_t ttl = 0;
    CHECK_RC(polycache_cache_set(cache, key, (const uint8_t *)"v", 1, POLYCACHE_TTL_DEFAULT, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_ttl(cache, key, &ttl, &err), POLYCACHE_RESULT_OK, err);
    return ttl;
}

static void typed_options_open_a_cache(void) {
    polycache_options *options = new_options();
    polycache_error *err = NULL;
    CHECK_RC(polycache_options_set_int(options, "max_entries", 2, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_options_set_str(options, "key_prefix", "app", &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_options_set_int(options, "version", 7, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_options_set_float(options, "timeout", 3600.5, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_options_set_bool(options, "fail_open", true, &err), POLYCACHE_RESULT_OK, err);
    /* A later value replaces an earlier one. */
    CHECK_RC(polycache_options_set_int(options, "max_entries", 100, &err), POLYCACHE_RESULT_OK, err);

    polycache_cache *cache = NULL;
    CHECK_RC(polycache_cache_open_with_options("memory://c-options", options, &cache, &err), POLYCACHE_RESULT_OK,
             err);
    /* The options stay the caller's: freed now, the cache keeps working. */
    polycache_options_free(options);

    /* timeout: the default TTL, 3600.5 s. */
    int64_t ttl = default_ttl_ms(cache, "k");
    CHECK(ttl > 3000000 && ttl <= 3600500);

    /* key_prefix and version: the same entry as a URL with the same options addresses. */
    polycache_cache *same = open_cache("memory://c-options?key_prefix=app&version=7");
    polycache_cache *other = open_cache("memory://c-options?key_prefix=app");
    polycache_value *value = NULL;
    CHECK_RC(polycache_cache_get(same, "k", &value, &err), POLYCACHE_RESULT_OK, err);
    polycache_value_free(value);
    value = NULL;
    CHECK_RC(polycache_cache_get(other, "k", &value, &err), POLYCACHE_RESULT_MISS, err);
    polycache_cache_free(same);
    polycache_cache_free(other);

    /* max_entries=100 bounds the store. */
    char key[16];
    for (int i = 0; i < 400; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK_RC(polycache_cache_set(cache, key, (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, &err),
                 POLYCACHE_RESULT_OK, err);
    }
    polycache_stats stats;
    memset(&stats, 0, sizeof stats);
    CHECK_RC(polycache_cache_stats(cache, &stats, &err), POLYCACHE_RESULT_OK, err);
    CHECK(stats.evictions > 0);
    polycache_cache_free(cache);

    /* None: a default TTL of never. */
    options = new_options();
    CHECK_RC(polycache_options_set_none(options, "timeout", &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_open_with_options("memory://", options, &cache, &err), POLYCACHE_RESULT_OK, err);
    CHECK(default_ttl_ms(cache, "k") == POLYCACHE_TTL_NEVER);
    polycache_cache_free(cache);
    polycache_options_free(options);

    /* NULL options: the URL's alone. */
    cache = NULL;
    CHECK_RC(polycache_cache_open_with_options("memory://?timeout=none", NULL, &cache, &err), POLYCACHE_RESULT_OK,
             err);
    CHECK(default_ttl_ms(cache, "k") == POLYCACHE_TTL_NEVER);
    polycache_cache_free(cache);
}

static void bad_options_name_the_option_and_c(void) {
    polycache_options *options = new_options();
    polycache_error *err = NULL;
    polycache_cache *cache = NULL;

    /* A bad value: found when the cache is opened; nothing is written to cache_out. */
    CHECK_RC(polycache_options_set_int(options, "max_entries", -1, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_cache_open_with_options("memory://", options, &cache, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(cache == NULL);
    CHECK(message_starts(err, "option max_entries set from C: "));
    polycache_error_free(err);
    err = NULL;
    polycache_options_free(options);

    /* An option the scheme does not take. */
    options = new_options();
    CHECK_RC(polycache_options_set_str(options, "max_entires", "10", &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_cache_open_with_options("memory://", options, &cache, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(cache == NULL);
    CHECK(strstr(polycache_error_message(err), "max_entires") != NULL);
    CHECK(strstr(polycache_error_message(err), "set from C") != NULL);
    polycache_error_free(err);
    err = NULL;
    polycache_options_free(options);

    /* A type the option cannot take: a boolean max_entries. */
    options = new_options();
    CHECK_RC(polycache_options_set_bool(options, "max_entries", true, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_cache_open_with_options("memory://", options, &cache, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(message_starts(err, "option max_entries set from C: "));
    polycache_error_free(err);
    err = NULL;
    polycache_options_free(options);

    /* Given in the URL and from C: an error naming both. */
    options = new_options();
    CHECK_RC(polycache_options_set_int(options, "max_entries", 10, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_cache_open_with_options("memory://?max_entries=5", options, &cache, &err) ==
          POLYCACHE_RESULT_CONFIGURATION);
    CHECK(strstr(polycache_error_message(err), "query parameter max_entries in the URL") != NULL);
    CHECK(strstr(polycache_error_message(err), "option max_entries set from C") != NULL);
    polycache_error_free(err);
    err = NULL;

    /* Names that cannot be options, and numbers that are not finite: refused at once. */
    CHECK(polycache_options_set_int(options, "", 1, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(message_starts(err, "an option set from C: not an option name"));
    polycache_error_free(err);
    err = NULL;
    CHECK(polycache_options_set_str(options, "a=b", "1", &err) == POLYCACHE_RESULT_CONFIGURATION);
    polycache_error_free(err);
    err = NULL;
    CHECK(polycache_options_set_float(options, "timeout", NAN, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(message_starts(err, "option timeout set from C: "));
    polycache_error_free(err);
    err = NULL;
    CHECK(polycache_options_set_float(options, "timeout", INFINITY, NULL) == POLYCACHE_RESULT_CONFIGURATION);
    polycache_options_free(options);

    /* Invalid UTF-8 in a name or a value. */
    options = new_options();
    CHECK(polycache_options_set_str(options, "key_prefix", "\xff", NULL) == POLYCACHE_RESULT_INVALID_UTF8);
    CHECK(polycache_options_set_int(options, "\xfe", 1, NULL) == POLYCACHE_RESULT_INVALID_UTF8);
    polycache_options_free(options);
}

static void null_arguments(void) {
    polycache_options *options = new_options();
    polycache_cache *cache = NULL;
    polycache_error *err = NULL;
    CHECK(polycache_options_new(NULL, NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_options_set_str(NULL, "key_prefix", "a", NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_options_set_str(options, NULL, "a", NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_options_set_str(options, "key_prefix", NULL, &err) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(strstr(polycache_error_message(err), "value") != NULL);
    polycache_error_free(err);
    err = NULL;
    CHECK(polycache_options_set_int(NULL, "max_entries", 1, NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_options_set_float(options, NULL, 1.0, NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_options_set_bool(NULL, "fail_open", true, NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_options_set_none(options, NULL, NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_cache_open_with_options(NULL, options, &cache, NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(polycache_cache_open_with_options("memory://", options, NULL, NULL) == POLYCACHE_RESULT_NULL_PARAMETER);
    CHECK(cache == NULL);
    polycache_options_free(options);
    polycache_options_free(NULL);
}

int main(void) {
    typed_options_open_a_cache();
    bad_options_name_the_option_and_c();
    null_arguments();
    return check_summary();
}
