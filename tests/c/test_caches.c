/*
 * Tests of the service from C: named caches from JSON and TOML configuration text.
 * Run by tests/c/run.sh under valgrind and AddressSanitizer.
 */
#include "check.h"

static const char *JSON_CONFIG =
    "{\"default\": {\"LOCATION\": \"memory://c-service\", \"TIMEOUT\": 60},"
    " \"sessions\": {\"location\": \"memory://c-service\", \"key_prefix\": \"s\", \"timeout\": null,"
    "              \"options\": {\"max_value_size\": 8}}}";

static const char *TOML_CONFIG =
    "[default]\n"
    "location = \"memory://c-service\"\n"
    "timeout = 60\n"
    "\n"
    "[sessions]\n"
    "location = \"memory://c-service\"\n"
    "key_prefix = \"s\"\n"
    "timeout = \"none\"\n"
    "options = { max_value_size = 8 }\n";

/* The same checks on caches configured by JSON or TOML. */
static void check_service(polycache_caches *caches) {
    polycache_error *err = NULL;
    CHECK(polycache_caches_count(caches) == 2);
    CHECK(strcmp(polycache_caches_name(caches, 0), "default") == 0);
    CHECK(strcmp(polycache_caches_name(caches, 1), "sessions") == 0);
    CHECK(polycache_caches_name(caches, 2) == NULL);

    polycache_cache *def = NULL, *sessions = NULL, *again = NULL;
    CHECK_RC(polycache_caches_get(caches, "default", &def, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_caches_get(caches, "sessions", &sessions, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_caches_get(caches, "default", &again, &err), POLYCACHE_RESULT_OK, err);

    /* One store, two key prefixes: the same key name holds two values. */
    CHECK(set_str(def, "user", "d", POLYCACHE_TTL_DEFAULT));
    CHECK(set_str(sessions, "user", "s", POLYCACHE_TTL_DEFAULT));
    CHECK(holds(def, "user", "d", 1));
    CHECK(holds(sessions, "user", "s", 1));
    /* Two handles on one named cache share its entries and counters. */
    CHECK(holds(again, "user", "d", 1));
    polycache_stats stats;
    CHECK_RC(polycache_cache_stats(def, &stats, &err), POLYCACHE_RESULT_OK, err);
    CHECK(stats.hits == 2 && stats.sets == 1);
    /* The options reach the cache: max_value_size = 8. */
    CHECK_RC(polycache_cache_set(sessions, "big", (const uint8_t *)"123456789", 9, POLYCACHE_TTL_DEFAULT, &err),
             POLYCACHE_RESULT_VALUE_TOO_LARGE, err);

    /* An unknown name is a configuration error listing the names there are. */
    polycache_cache *sentinel = (polycache_cache *)&err, *c = sentinel;
    CHECK(polycache_caches_get(caches, "nope", &c, &err) == POLYCACHE_RESULT_CONFIGURATION);
    CHECK(c == sentinel);
    CHECK(err != NULL && strstr(polycache_error_message(err), "default, sessions") != NULL);
    polycache_error_free(err);
    err = NULL;

    /* Handles outlive the caches object: free it first, use them after. */
    polycache_caches_free(caches);
    CHECK(holds(def, "user", "d", 1));
    CHECK_RC(polycache_cache_clear(def, &err), POLYCACHE_RESULT_OK, err);
    polycache_cache_free(def);
    polycache_cache_free(sessions);
    polycache_cache_free(again);
}

static void test_json_and_toml(void) {
    polycache_error *err = NULL;
    polycache_caches *caches = NULL;
    CHECK_RC(polycache_caches_from_json(JSON_CONFIG, &caches, &err), POLYCACHE_RESULT_OK, err);
    if (caches != NULL) {
        check_service(caches);
    }
    caches = NULL;
    CHECK_RC(polycache_caches_from_toml(TOML_CONFIG, &caches, &err), POLYCACHE_RESULT_OK, err);
    if (caches != NULL) {
        check_service(caches);
    }
}

/* Expects a configuration error whose message contains `needle`, and no output. */
static void check_bad(polycache_result (*parse)(const char *, polycache_caches **, polycache_error **),
                      const char *config, const char *needle) {
    polycache_error *err = NULL;
    polycache_caches *sentinel = (polycache_caches *)&err, *caches = sentinel;
    polycache_result rc = parse(config, &caches, &err);
    int ok = rc == POLYCACHE_RESULT_CONFIGURATION && caches == sentinel && err != NULL &&
             strstr(polycache_error_message(err), needle) != NULL;
    if (!ok) {
        fprintf(stderr, "bad config %s: got %s (%s), expected configuration naming %s\n", config,
                polycache_result_name(rc), polycache_error_message(err), needle);
    }
    CHECK(ok);
    polycache_error_free(err);
}

static void test_bad_configurations(void) {
    check_bad(polycache_caches_from_json, "{", "not valid JSON");
    check_bad(polycache_caches_from_json, "[]", "JSON object");
    check_bad(polycache_caches_from_json, "{\"other\": {\"LOCATION\": \"memory://\"}}", "no 'default'");
    check_bad(polycache_caches_from_json, "{\"default\": {\"LOCATION\": \"nosuch://\"}}", "cache 'default'");
    check_bad(polycache_caches_from_json, "{\"default\": {\"LOCATION\": \"memory://\", \"OPTIONS\": {\"bogus\": 1}}}",
              "bogus");
    check_bad(polycache_caches_from_toml, "[default\nlocation = 1", "not valid TOML");
    check_bad(polycache_caches_from_toml, "[default]\nlocation = 5", "LOCATION");
    check_bad(polycache_caches_from_toml, "[default]\ntimeout = true", "TIMEOUT");
    check_bad(polycache_caches_from_toml, "[default]\nlocation = \"memory://?max_entries=-1\"", "max_entries");

    polycache_error *err = NULL;
    polycache_caches *caches = NULL;
    polycache_cache *cache = NULL;
    CHECK_RC(polycache_caches_from_json(NULL, &caches, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_caches_from_toml(TOML_CONFIG, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_caches_from_toml("[default]\nlocation = \"memory://\xff\"", &caches, &err),
             POLYCACHE_RESULT_INVALID_UTF8, err);
    CHECK_RC(polycache_caches_get(NULL, "default", &cache, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK(caches == NULL && cache == NULL);
    CHECK(polycache_caches_count(NULL) == 0);
    CHECK(polycache_caches_name(NULL, 0) == NULL);
    polycache_caches_free(NULL);

    CHECK_RC(polycache_caches_from_json("{\"default\": {\"LOCATION\": \"dummy://\"}}", &caches, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_caches_get(caches, NULL, &cache, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_caches_get(caches, "default", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    polycache_caches_free(caches);
}

int main(void) {
    test_json_and_toml();
    test_bad_configurations();
    return check_summary();
}
