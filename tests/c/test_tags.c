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

/* replace and incr/decr at an invalidated tagged entry act as at a missing key; at a live
 * tagged entry replace stores and incr refuses (it is not a counter). */
static void test_invalidated_is_missing_to_writes(const char *url) {
    polycache_cache *cache = open_cache(url);
    polycache_error *err = NULL;
    const char *gone[] = {"c-gone"};
    const char *keep[] = {"c-keep"};
    const char *keys[] = {"w-replace", "w-incr"};
    for (size_t i = 0; i < 2; i++) {
        CHECK_RC(polycache_cache_set_tagged(cache, keys[i], (const uint8_t *)"5", 1, 60000, gone, 1, &err),
                 POLYCACHE_RESULT_OK, err);
    }
    CHECK_RC(polycache_cache_set_tagged(cache, "w-live", (const uint8_t *)"5", 1, 60000, keep, 1, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_cache_invalidate_tags(cache, gone, 1, &err), POLYCACHE_RESULT_OK, err);
    bool stored = true;
    CHECK_RC(polycache_cache_replace(cache, "w-replace", (const uint8_t *)"6", 1, 60000, &stored, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(!stored);
    CHECK(is_miss(cache, "w-replace"));
    int64_t n = 0;
    CHECK_RC(polycache_cache_incr(cache, "w-incr", 1, &n, &err), POLYCACHE_RESULT_NOT_FOUND, err);
    CHECK_RC(polycache_cache_decr(cache, "w-incr", 1, &n, &err), POLYCACHE_RESULT_NOT_FOUND, err);
    CHECK_RC(polycache_cache_incr(cache, "w-live", 1, &n, &err), POLYCACHE_RESULT_NOT_AN_INTEGER, err);
    CHECK_RC(polycache_cache_replace(cache, "w-live", (const uint8_t *)"6", 1, 60000, &stored, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(stored);
    CHECK(holds(cache, "w-live", "6", 1));
    polycache_cache_free(cache);
}

/* A tag of 201 bytes, one more than allowed. */
typedef struct {
    char text[202];
} long_tag;

static long_tag one_too_long(void) {
    long_tag tag;
    memset(tag.text, 't', sizeof tag.text - 1);
    tag.text[sizeof tag.text - 1] = '\0';
    return tag;
}

static void test_bad_input(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    long_tag tag = one_too_long();
    const char *empty[] = {""};
    const char *too_long[] = {tag.text};
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

/* A loader that counts its calls and computes "computed:<key>"; with `invalidate` set, it
 * invalidates that tag while it computes (the race). */
typedef struct {
    int calls;
    const char *invalidate;
    polycache_cache *cache;
} tagged_loader_state;

static polycache_result tagged_loader(void *user_data, const char *key, polycache_loader_output *output) {
    tagged_loader_state *state = user_data;
    state->calls++;
    if (state->invalidate != NULL) {
        const char *tags[] = {state->invalidate};
        polycache_error *err = NULL;
        CHECK_RC(polycache_cache_invalidate_tags(state->cache, tags, 1, &err), POLYCACHE_RESULT_OK, err);
    }
    char buf[64];
    int len = snprintf(buf, sizeof buf, "computed:%s", key);
    return polycache_loader_output_set(output, (const uint8_t *)buf, (size_t)len, NULL);
}

/* Calls polycache_cache_get_or_set_with_tagged and checks the value it answers. */
static void expect_loaded(polycache_cache *cache, const char *key, const char **tags, size_t n_tags,
                          tagged_loader_state *state, const char *want) {
    polycache_value *value = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_cache_get_or_set_with_tagged(cache, key, tagged_loader, state, POLYCACHE_TTL_NEVER, tags,
                                                    n_tags, &value, &err),
             POLYCACHE_RESULT_OK, err);
    if (value != NULL) {
        CHECK(polycache_value_len(value) == strlen(want) &&
              memcmp(polycache_value_data(value), want, strlen(want)) == 0);
    }
    polycache_value_free(value);
}

static void test_get_or_set_with_tagged(void) {
    polycache_cache *cache = open_cache("memory://c-tags-gosw");
    polycache_error *err = NULL;
    polycache_value *value = NULL;
    const char *tags[] = {"product:42"};
    tagged_loader_state state = {0, NULL, cache};
    expect_loaded(cache, "page", tags, 1, &state, "computed:page");
    expect_loaded(cache, "page", tags, 1, &state, "computed:page");
    CHECK(state.calls == 1);
    CHECK_RC(polycache_cache_invalidate_tags(cache, tags, 1, &err), POLYCACHE_RESULT_OK, err);
    CHECK(is_miss(cache, "page"));
    expect_loaded(cache, "page", tags, 1, &state, "computed:page");
    CHECK(state.calls == 2);
    CHECK(holds(cache, "page", "computed:page", 13));
    /* The race: invalidated while computed; the caller gets its value, nobody else. */
    tagged_loader_state racing = {0, "product:42", cache};
    CHECK_RC(polycache_cache_invalidate_tags(cache, tags, 1, &err), POLYCACHE_RESULT_OK, err);
    expect_loaded(cache, "page", tags, 1, &racing, "computed:page");
    CHECK(racing.calls == 1);
    CHECK(is_miss(cache, "page"));
    /* No tags: a plain get_or_set_with. */
    expect_loaded(cache, "plain", NULL, 0, &state, "computed:plain");
    CHECK(holds(cache, "plain", "computed:plain", 14));

    /* Bad input: clear errors, the loader never called, nothing stored, nothing written. */
    long_tag tag = one_too_long();
    const char *empty[] = {""};
    const char *too_long[] = {tag.text};
    const char *with_null[] = {"ok", NULL};
    const char bad_utf8[] = {'o', (char)0xff, '\0'};
    const char *not_utf8[] = {bad_utf8};
    tagged_loader_state untouched = {0, NULL, cache};
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(cache, "k", tagged_loader, &untouched, POLYCACHE_TTL_NEVER, empty,
                                                     1, &value, &err),
              POLYCACHE_RESULT_INVALID_KEY, err, "empty");
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(cache, "k", tagged_loader, &untouched, POLYCACHE_TTL_NEVER,
                                                     too_long, 1, &value, &err),
              POLYCACHE_RESULT_INVALID_KEY, err, "longer");
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(cache, "k", tagged_loader, &untouched, POLYCACHE_TTL_NEVER,
                                                     not_utf8, 1, &value, &err),
              POLYCACHE_RESULT_INVALID_UTF8, err, "tags[i]");
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(cache, "k", tagged_loader, &untouched, POLYCACHE_TTL_NEVER,
                                                     with_null, 2, &value, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "tags[i]");
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(cache, "k", tagged_loader, &untouched, POLYCACHE_TTL_NEVER, NULL, 1,
                                                     &value, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "tags");
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(cache, "k", NULL, &untouched, POLYCACHE_TTL_NEVER, tags, 1, &value,
                                                     &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "loader");
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(cache, NULL, tagged_loader, &untouched, POLYCACHE_TTL_NEVER, tags,
                                                     1, &value, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "key");
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(cache, bad_utf8, tagged_loader, &untouched, POLYCACHE_TTL_NEVER,
                                                     tags, 1, &value, &err),
              POLYCACHE_RESULT_INVALID_UTF8, err, "key");
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(NULL, "k", tagged_loader, &untouched, POLYCACHE_TTL_NEVER, tags, 1,
                                                     &value, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "cache");
    CHECK_ERR(polycache_cache_get_or_set_with_tagged(cache, "k", tagged_loader, &untouched, POLYCACHE_TTL_NEVER, tags,
                                                     1, NULL, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "value_out");
    CHECK(untouched.calls == 0);
    CHECK(value == NULL);
    CHECK(is_miss(cache, "k"));
    polycache_cache_free(cache);
}

int main(void) {
    test_invalidation();
    test_bad_input();
    test_get_or_set_with_tagged();
    test_starts("memory://c-tags-starts");
    test_invalidated_is_missing_to_writes("memory://c-tags-writes");
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
    test_invalidated_is_missing_to_writes(url);
    return check_summary();
}
