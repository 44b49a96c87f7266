/*
 * polycache_cache_set_tagged / polycache_cache_invalidate_tags: a tagged entry is a miss
 * once any of its tags is invalidated, through this handle or another one on the same
 * store; untagged entries and other tags are unaffected; bad tags and NULL parameters.
 * Their non-blocking forms through a polycache_queue, on memory:// (inline completions) and
 * on the Redis that testkit's `with-servers` starts (POLYCACHE_TEST_REDIS_URL).
 */
#include "check.h"
#include "queue_util.h"

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

/* Takes one completion and checks its op and result. */
static void expect_completion(polycache_queue *queue, polycache_op op, polycache_result result) {
    polycache_completion c;
    if (!next(queue, &c)) {
        CHECK(0);
        return;
    }
    CHECK(c.op == op && c.result == result);
    CHECK((c.error != NULL) == (result != POLYCACHE_RESULT_OK));
    free_completion(&c);
}

static void test_starts(const char *url) {
    polycache_cache *cache = open_cache(url);
    polycache_queue *queue = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_queue_new(&queue, &err), POLYCACHE_RESULT_OK, err);
    const char *tags[] = {"started"};
    const char *empty[] = {""};
    CHECK_RC(polycache_cache_set_tagged_start(cache, queue, "s", (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, tags,
                                              1, tag(1), &err),
             POLYCACHE_RESULT_OK, err);
    expect_completion(queue, POLYCACHE_OP_SET_TAGGED, POLYCACHE_RESULT_OK);
    CHECK(holds(cache, "s", "v", 1));
    CHECK_RC(polycache_cache_invalidate_tags_start(cache, queue, tags, 1, tag(2), &err), POLYCACHE_RESULT_OK, err);
    expect_completion(queue, POLYCACHE_OP_INVALIDATE_TAGS, POLYCACHE_RESULT_OK);
    CHECK(is_miss(cache, "s"));
    /* A bad tag arrives as the completion's result; nothing is stored. */
    CHECK_RC(polycache_cache_set_tagged_start(cache, queue, "bad", (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, empty,
                                              1, tag(3), &err),
             POLYCACHE_RESULT_OK, err);
    expect_completion(queue, POLYCACHE_OP_SET_TAGGED, POLYCACHE_RESULT_INVALID_KEY);
    CHECK(is_miss(cache, "bad"));
    CHECK_ERR(polycache_cache_invalidate_tags_start(cache, NULL, tags, 1, tag(4), &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "queue");
    CHECK_ERR(polycache_cache_set_tagged_start(cache, queue, "k", (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, NULL, 1,
                                               tag(5), &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "tags");
    polycache_queue_free(queue);
    polycache_cache_free(cache);
}

int main(void) {
    test_invalidation();
    test_bad_input();
    test_starts("memory://c-tags-starts");
    const char *redis = getenv("POLYCACHE_TEST_REDIS_URL");
    if (redis == NULL) {
        fprintf(stderr, "POLYCACHE_TEST_REDIS_URL is not set: run this test through tests/c/run.sh, which starts "
                        "the servers\n");
        CHECK(0);
        return check_summary();
    }
    char url[512];
    snprintf(url, sizeof url, "%s%skey_prefix=c-tags&socket_timeout=60&connect_timeout=60", redis,
             strchr(redis, '?') ? "&" : "?");
    test_starts(url);
    return check_summary();
}
