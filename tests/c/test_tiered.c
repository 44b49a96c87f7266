/*
 * tiered:// with bus=tracking on the Redis that tests/c/run.sh starts
 * (POLYCACHE_TEST_REDIS_URL): a write by a plain cache, which publishes nothing, reaches the
 * L1 of two tracked tiered caches through the server's own notifications; the same over the
 * Redis Cluster of POLYCACHE_TEST_REDIS_CLUSTER_URL (keys on every primary); tracking over a
 * non-Redis L2 is a configuration error.
 */
#include "check.h"

/* Percent-encodes `in` into `out` (for a URL inside a URL's option). */
static const char *encode(char *out, size_t cap, const char *in) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *in != '\0' && n + 4 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
            c == '_' || c == '.' || c == '~') {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
    return out;
}

struct expect {
    polycache_cache *cache;
    const char *key;
    const char *want;
};

static int holds_now(void *arg) {
    struct expect *e = arg;
    return holds(e->cache, e->key, e->want, strlen(e->want));
}

static void test_tracking(const char *redis) {
    char l2[512], url[768], plain_url[512];
    snprintf(url, sizeof url, "tiered://?l2=%s&bus=tracking&l1_timeout=600&key_prefix=c-tracking",
             encode(l2, sizeof l2, redis));
    snprintf(plain_url, sizeof plain_url, "%s%skey_prefix=c-tracking", redis, strchr(redis, '?') ? "&" : "?");
    polycache_cache *a = open_cache(url);
    polycache_cache *b = open_cache(url);
    polycache_cache *plain = open_cache(plain_url);

    CHECK(set_str(plain, "k", "old", POLYCACHE_TTL_NEVER));
    CHECK(holds(a, "k", "old", 3));
    CHECK(holds(b, "k", "old", 3));
    CHECK(set_str(plain, "k", "new", POLYCACHE_TTL_NEVER));
    struct expect ea = {a, "k", "new"}, eb = {b, "k", "new"};
    CHECK(wait_until(holds_now, &ea, 10000));
    CHECK(wait_until(holds_now, &eb, 10000));

    polycache_cache_free(a);
    polycache_cache_free(b);
    polycache_cache_free(plain);
}

static void test_tracking_cluster(const char *cluster) {
    char l2[512], url[768], plain_url[512], key[16];
    snprintf(url, sizeof url, "tiered://?l2=%s&bus=tracking&l1_timeout=600&key_prefix=c-cluster",
             encode(l2, sizeof l2, cluster));
    snprintf(plain_url, sizeof plain_url, "%s?key_prefix=c-cluster", cluster);
    polycache_cache *tracked = open_cache(url);
    polycache_cache *plain = open_cache(plain_url);
    /* 30 keys fall on every primary's slots. */
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK(set_str(plain, key, "old", POLYCACHE_TTL_NEVER));
        CHECK(holds(tracked, key, "old", 3));
    }
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK(set_str(plain, key, "new", POLYCACHE_TTL_NEVER));
        struct expect e = {tracked, key, "new"};
        CHECK(wait_until(holds_now, &e, 10000));
    }
    polycache_cache_free(tracked);
    polycache_cache_free(plain);
}

static void test_not_redis(void) {
    polycache_cache *cache = NULL;
    polycache_error *err = NULL;
    CHECK_ERR(polycache_cache_open("tiered://?l2=memory%3A%2F%2F&bus=tracking", &cache, &err),
              POLYCACHE_RESULT_CONFIGURATION, err, "needs a Redis l2");
    CHECK(cache == NULL);
}

/* Runs `test` on the URL in environment variable `name` (set by tests/c/run.sh). */
static void with_url(const char *name, void (*test)(const char *)) {
    const char *url = getenv(name);
    if (url == NULL) {
        fprintf(stderr, "%s is not set: run this test through tests/c/run.sh\n", name);
        CHECK(url != NULL);
    } else {
        test(url);
    }
}

int main(void) {
    test_not_redis();
    with_url("POLYCACHE_TEST_REDIS_URL", test_tracking);
    with_url("POLYCACHE_TEST_REDIS_CLUSTER_URL", test_tracking_cluster);
    return check_summary();
}
