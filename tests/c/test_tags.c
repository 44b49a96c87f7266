/*
 * polycache_cache_set_tagged / polycache_cache_invalidate_tags: a tagged entry is a miss
 * once any of its tags is invalidated, through this handle or another one on the same
 * store; untagged entries and other tags are unaffected; bad tags and NULL parameters.
 */
#include "check.h"

static void test_invalidation(void) {
    polycache_cache *a = open_cache("memory://c-tags?key_prefix=app");
    polycache_cache *b = open_cache("memory://c-tags?key_prefix=app");
    polycache_error *err = NULL;
    const char *product[] = {"product:42", "home"};
    const char *other[] = {"product:7"};
    CHECK_RC(polycache_cache_set_tagged(a, "page", (const uint8_t *)"v1", 2, POLYCACHE_TTL_NEVER, product, 2, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_set_tagged(a, "seven", (const uint8_t *)"v7", 2, POLYCACHE_TTL_NEVER, other, 1, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_set_tagged(a, "plain", (const uint8_t *)"p", 1, POLYCACHE_TTL_NEVER, NULL, 0, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(holds(b, "page", "v1", 2));
    const char *invalidate[] = {"home"};
    CHECK_RC(polycache_cache_invalidate_tags(b, invalidate, 1, &err), POLYCACHE_RESULT_OK, err);
    CHECK(is_miss(a, "page"));
    CHECK(is_miss(b, "page"));
    CHECK(holds(a, "seven", "v7", 2));
    CHECK(holds(a, "plain", "p", 1));
    CHECK_RC(polycache_cache_invalidate_tags(a, NULL, 0, &err), POLYCACHE_RESULT_OK, err);
    polycache_cache_free(a);
    polycache_cache_free(b);
}

static void test_bad_input(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    char long_tag[202];
    memset(long_tag, 't', sizeof long_tag - 1);
    long_tag[sizeof long_tag - 1] = '\0';
    const char *empty[] = {""};
    const char *too_long[] = {long_tag};
    const char *with_null[] = {"ok", NULL};
    const uint8_t *v = (const uint8_t *)"v";
    CHECK_ERR(polycache_cache_set_tagged(cache, "k", v, 1, POLYCACHE_TTL_NEVER, empty, 1, &err),
              POLYCACHE_RESULT_INVALID_KEY, err, "empty");
    CHECK_ERR(polycache_cache_set_tagged(cache, "k", v, 1, POLYCACHE_TTL_NEVER, too_long, 1, &err),
              POLYCACHE_RESULT_INVALID_KEY, err, "longer");
    CHECK(is_miss(cache, "k"));
    CHECK_ERR(polycache_cache_set_tagged(cache, "k", v, 1, POLYCACHE_TTL_NEVER, with_null, 2, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "tags[i]");
    CHECK_ERR(polycache_cache_set_tagged(cache, "k", v, 1, POLYCACHE_TTL_NEVER, NULL, 1, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "tags");
    CHECK_ERR(polycache_cache_set_tagged(NULL, "k", v, 1, POLYCACHE_TTL_NEVER, empty, 1, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "cache");
    CHECK_ERR(polycache_cache_invalidate_tags(cache, empty, 1, &err), POLYCACHE_RESULT_INVALID_KEY, err, "empty");
    CHECK_ERR(polycache_cache_invalidate_tags(NULL, empty, 1, &err), POLYCACHE_RESULT_NULL_PARAMETER, err, "cache");
    CHECK(is_miss(cache, "k"));
    polycache_cache_free(cache);
}

int main(void) {
    test_invalidation();
    test_bad_input();
    return check_summary();
}
