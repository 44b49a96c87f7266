/*
 * polycache_cache_redis_command and polycache_redis_reply: a set and a sorted set on the
 * Redis that tests/c/run.sh starts (POLYCACHE_TEST_REDIS_URL), and UNSUPPORTED on memory://.
 */
#include "check.h"
#include "redis_args.h"

/* True when `reply` is BYTES holding exactly `text`. */
static int is_text(const polycache_redis_reply *reply, const char *text) {
    return polycache_redis_reply_kind(reply) == POLYCACHE_REDIS_REPLY_BYTES &&
           polycache_redis_reply_len(reply) == strlen(text) &&
           memcmp(polycache_redis_reply_data(reply), text, strlen(text)) == 0;
}

static int64_t int_answer(polycache_cache *cache, const char *command, const polycache_redis_arg *args,
                          size_t n) {
    polycache_redis_reply *reply = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_cache_redis_command(cache, command, args, n, &reply, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_redis_reply_kind(reply) == POLYCACHE_REDIS_REPLY_INT);
    int64_t answer = polycache_redis_reply_int(reply);
    polycache_redis_reply_free(reply);
    return answer;
}

static void test_on_redis(const char *base) {
    char url[256];
    snprintf(url, sizeof url, "%s%skey_prefix=c-structures", base, strchr(base, '?') ? "&" : "?");
    polycache_cache *cache = open_cache(url);
    polycache_error *err = NULL;

    polycache_redis_arg sadd[] = {key_arg("s"), bytes_arg("a"), bytes_arg("b")};
    CHECK(int_answer(cache, "SADD", sadd, 3) == 2);
    polycache_redis_arg scard[] = {key_arg("s")};
    CHECK(int_answer(cache, "scard", scard, 1) == 2);

    polycache_redis_arg zadd[] = {key_arg("z"), float_arg(1.5), bytes_arg("m"), int_arg(2), bytes_arg("n")};
    CHECK(int_answer(cache, "ZADD", zadd, 5) == 2);
    polycache_redis_arg zrange[] = {key_arg("z"), int_arg(0), int_arg(-1), bytes_arg("WITHSCORES")};
    polycache_redis_reply *reply = NULL;
    CHECK_RC(polycache_cache_redis_command(cache, "ZRANGE", zrange, 4, &reply, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_redis_reply_kind(reply) == POLYCACHE_REDIS_REPLY_ARRAY);
    CHECK(polycache_redis_reply_array_len(reply) == 4);
    CHECK(is_text(polycache_redis_reply_element(reply, 0), "m"));
    CHECK(is_text(polycache_redis_reply_element(reply, 1), "1.5"));
    CHECK(is_text(polycache_redis_reply_element(reply, 2), "n"));
    CHECK(polycache_redis_reply_element(reply, 4) == NULL);
    polycache_redis_reply_free(reply);

    polycache_redis_arg zscore[] = {key_arg("z"), bytes_arg("absent")};
    reply = NULL;
    CHECK_RC(polycache_cache_redis_command(cache, "ZSCORE", zscore, 2, &reply, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_redis_reply_kind(reply) == POLYCACHE_REDIS_REPLY_NIL);
    polycache_redis_reply_free(reply);

    /* Bad calls: outside the allow-list, bytes where the key goes, a wrong type, NULLs. */
    reply = NULL;
    CHECK_RC(polycache_cache_redis_command(cache, "FLUSHALL", NULL, 0, &reply, &err), POLYCACHE_RESULT_UNSUPPORTED,
             err);
    polycache_redis_arg raw[] = {bytes_arg("s")};
    CHECK_RC(polycache_cache_redis_command(cache, "SCARD", raw, 1, &reply, &err), POLYCACHE_RESULT_INVALID_KEY, err);
    polycache_redis_arg bad_kind[] = {key_arg("s")};
    bad_kind[0].kind = 99;
    CHECK_RC(polycache_cache_redis_command(cache, "SCARD", bad_kind, 1, &reply, &err), POLYCACHE_RESULT_INVALID_KEY,
             err);
    CHECK_RC(polycache_cache_redis_command(cache, "ZCARD", scard, 1, &reply, &err), POLYCACHE_RESULT_BACKEND, err);
    CHECK_RC(polycache_cache_redis_command(cache, "SCARD", NULL, 1, &reply, &err), POLYCACHE_RESULT_NULL_PARAMETER,
             err);
    CHECK_RC(polycache_cache_redis_command(cache, "SCARD", scard, 1, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER,
             err);
    CHECK(reply == NULL);

    bool deleted = false;
    CHECK_RC(polycache_cache_delete(cache, "s", &deleted, &err), POLYCACHE_RESULT_OK, err);
    CHECK(deleted);
    CHECK_RC(polycache_cache_delete(cache, "z", &deleted, &err), POLYCACHE_RESULT_OK, err);
    CHECK(deleted);
    polycache_cache_free(cache);
}

static void test_unsupported_elsewhere(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    polycache_redis_reply *reply = NULL;
    polycache_redis_arg scard[] = {key_arg("s")};
    CHECK_RC(polycache_cache_redis_command(cache, "SCARD", scard, 1, &reply, &err), POLYCACHE_RESULT_UNSUPPORTED,
             err);
    CHECK(reply == NULL);
    /* The accessors take NULL. */
    CHECK(polycache_redis_reply_kind(NULL) == POLYCACHE_REDIS_REPLY_NIL);
    CHECK(polycache_redis_reply_data(NULL) == NULL);
    CHECK(polycache_redis_reply_len(NULL) == 0);
    CHECK(polycache_redis_reply_array_len(NULL) == 0);
    CHECK(polycache_redis_reply_element(NULL, 0) == NULL);
    polycache_redis_reply_free(NULL);
    polycache_cache_free(cache);
}

int main(void) {
    test_unsupported_elsewhere();
    const char *redis = getenv("POLYCACHE_TEST_REDIS_URL");
    if (redis == NULL) {
        fprintf(stderr, "POLYCACHE_TEST_REDIS_URL is not set: run this test through tests/c/run.sh\n");
        CHECK(redis != NULL);
    } else {
        test_on_redis(redis);
    }
    return check_summary();
}
