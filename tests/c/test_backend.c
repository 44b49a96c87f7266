/*
 * Tests of a custom backend from C function pointers (polycache_cache_open_custom): every
 * operation reaches the callbacks with full keys and TTLs, and callbacks that fail, return
 * unknown codes, forget their value or are missing give clear codes, never a crash.
 * Run by tests/c/run.sh under valgrind and AddressSanitizer.
 */
#include "check.h"

#define SLOTS 64

/* A tiny store: a fixed table under one mutex. */
typedef struct {
    pthread_mutex_t lock;
    char keys[SLOTS][64];
    uint8_t values[SLOTS][64];
    size_t lens[SLOTS];
    int used[SLOTS];
    int64_t last_ttl_ms;
    polycache_result fail_with; /* when not OK, every callback returns it */
    int forget_value;           /* get returns OK without setting a value */
    int releases;
} store;

static int find(store *s, const uint8_t *key, size_t len) {
    for (int i = 0; i < SLOTS; i++) {
        if (s->used[i] && strlen(s->keys[i]) == len && memcmp(s->keys[i], key, len) == 0) {
            return i;
        }
    }
    return -1;
}

static int put(store *s, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen) {
    int i = find(s, key, klen);
    for (int j = 0; i < 0 && j < SLOTS; j++) {
        if (!s->used[j]) {
            i = j;
        }
    }
    if (i < 0 || klen >= sizeof s->keys[0] || vlen > sizeof s->values[0]) {
        return 0;
    }
    memcpy(s->keys[i], key, klen);
    s->keys[i][klen] = '\0';
    if (vlen > 0) {
        memcpy(s->values[i], value, vlen);
    }
    s->lens[i] = vlen;
    s->used[i] = 1;
    return 1;
}

static polycache_result cb_get(void *ud, const uint8_t *key, size_t key_len, polycache_loader_output *output) {
    store *s = ud;
    if (s->fail_with != POLYCACHE_RESULT_OK) {
        return s->fail_with;
    }
    if (s->forget_value) {
        return POLYCACHE_RESULT_OK;
    }
    pthread_mutex_lock(&s->lock);
    int i = find(s, key, key_len);
    polycache_result rc = POLYCACHE_RESULT_MISS;
    if (i >= 0) {
        rc = polycache_loader_output_set(output, s->values[i], s->lens[i], NULL);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static polycache_result cb_set(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
                               int64_t ttl_ms) {
    store *s = ud;
    if (s->fail_with != POLYCACHE_RESULT_OK) {
        return s->fail_with;
    }
    pthread_mutex_lock(&s->lock);
    s->last_ttl_ms = ttl_ms;
    int ok = put(s, key, key_len, value, value_len);
    pthread_mutex_unlock(&s->lock);
    return ok ? POLYCACHE_RESULT_OK : POLYCACHE_RESULT_VALUE_TOO_LARGE;
}

static polycache_result cb_add(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
                               int64_t ttl_ms, bool *stored_out) {
    store *s = ud;
    pthread_mutex_lock(&s->lock);
    s->last_ttl_ms = ttl_ms;
    int absent = find(s, key, key_len) < 0;
    int ok = !absent || put(s, key, key_len, value, value_len);
    pthread_mutex_unlock(&s->lock);
    *stored_out = absent;
    return ok ? POLYCACHE_RESULT_OK : POLYCACHE_RESULT_VALUE_TOO_LARGE;
}

static polycache_result cb_remove(void *ud, const uint8_t *key, size_t key_len, bool *removed_out) {
    store *s = ud;
    if (s->fail_with != POLYCACHE_RESULT_OK) {
        return s->fail_with;
    }
    pthread_mutex_lock(&s->lock);
    int i = find(s, key, key_len);
    if (i >= 0) {
        s->used[i] = 0;
    }
    pthread_mutex_unlock(&s->lock);
    *removed_out = i >= 0;
    return POLYCACHE_RESULT_OK;
}

static polycache_result cb_touch(void *ud, const uint8_t *key, size_t key_len, int64_t ttl_ms, bool *touched_out) {
    store *s = ud;
    pthread_mutex_lock(&s->lock);
    s->last_ttl_ms = ttl_ms;
    *touched_out = find(s, key, key_len) >= 0;
    pthread_mutex_unlock(&s->lock);
    return POLYCACHE_RESULT_OK;
}

static polycache_result cb_incr(void *ud, const uint8_t *key, size_t key_len, int64_t delta, int64_t *value_out) {
    store *s = ud;
    pthread_mutex_lock(&s->lock);
    int i = find(s, key, key_len);
    polycache_result rc = POLYCACHE_RESULT_NOT_FOUND;
    if (i >= 0) {
        char text[32];
        size_t n = s->lens[i] < sizeof text - 1 ? s->lens[i] : sizeof text - 1;
        memcpy(text, s->values[i], n);
        text[n] = '\0';
        long long v = strtoll(text, NULL, 10) + delta;
        s->lens[i] = (size_t)snprintf((char *)s->values[i], sizeof s->values[i], "%lld", v);
        *value_out = v;
        rc = POLYCACHE_RESULT_OK;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static polycache_result cb_clear(void *ud, const uint8_t *prefix, size_t prefix_len) {
    store *s = ud;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < SLOTS; i++) {
        if (s->used[i] && strncmp(s->keys[i], (const char *)prefix, prefix_len) == 0) {
            s->used[i] = 0;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return POLYCACHE_RESULT_OK;
}

static void cb_release(void *ud) {
    store *s = ud;
    s->releases++;
}

/* ttl: the store keeps no expiry, so a present key never expires. */
static polycache_result cb_ttl(void *ud, const uint8_t *key, size_t key_len, int64_t *ttl_ms_out) {
    store *s = ud;
    pthread_mutex_lock(&s->lock);
    int i = find(s, key, key_len);
    pthread_mutex_unlock(&s->lock);
    if (i < 0) {
        return POLYCACHE_RESULT_MISS;
    }
    *ttl_ms_out = POLYCACHE_TTL_NEVER;
    return POLYCACHE_RESULT_OK;
}

static polycache_result cb_replace(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value,
                                   size_t value_len, int64_t ttl_ms, bool *stored_out) {
    store *s = ud;
    pthread_mutex_lock(&s->lock);
    s->last_ttl_ms = ttl_ms;
    *stored_out = find(s, key, key_len) >= 0 && put(s, key, key_len, value, value_len);
    pthread_mutex_unlock(&s->lock);
    return POLYCACHE_RESULT_OK;
}

static const polycache_backend_vtable FULL = {cb_get,   cb_set,  cb_add,   cb_remove,  cb_touch,
                                             cb_incr, cb_clear, cb_release, cb_ttl, cb_replace};

static store *new_store(void) {
    store *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

static void free_store(store *s) {
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void test_every_operation(void) {
    store *s = new_store();
    polycache_error *err = NULL;
    polycache_cache *cache = NULL;
    CHECK_RC(polycache_cache_open_custom(&FULL, s, "key_prefix=app&timeout=60", &cache, &err), POLYCACHE_RESULT_OK,
             err);
    bool flag = false;
    int64_t n = 0;

    CHECK(set_str(cache, "k", "v1", POLYCACHE_TTL_DEFAULT));
    CHECK(find(s, (const uint8_t *)"app:1:k", 7) >= 0); /* the full key reaches the backend */
    CHECK(s->last_ttl_ms == 60000);                       /* the default TTL, from the options */
    CHECK(holds(cache, "k", "v1", 2));
    CHECK(is_miss(cache, "absent"));
    CHECK(set_str(cache, "k", "v2", POLYCACHE_TTL_NEVER));
    CHECK(s->last_ttl_ms == POLYCACHE_TTL_NEVER);
    CHECK(set_str(cache, "k", "v3", 1500));
    CHECK(s->last_ttl_ms == 1500);

    CHECK_RC(polycache_cache_add(cache, "k", (const uint8_t *)"x", 1, POLYCACHE_TTL_NEVER, &flag, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(flag == false);
    CHECK_RC(polycache_cache_add(cache, "new", (const uint8_t *)"x", 1, POLYCACHE_TTL_NEVER, &flag, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK_RC(polycache_cache_has_key(cache, "new", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK_RC(polycache_cache_touch(cache, "new", 2000, &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true && s->last_ttl_ms == 2000);

    CHECK(set_str(cache, "n", "41", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_incr(cache, "n", 1, &n, &err), POLYCACHE_RESULT_OK, err);
    CHECK(n == 42);
    CHECK_RC(polycache_cache_decr(cache, "n", 2, &n, &err), POLYCACHE_RESULT_OK, err);
    CHECK(n == 40);
    CHECK_RC(polycache_cache_incr(cache, "absent", 1, &n, &err), POLYCACHE_RESULT_NOT_FOUND, err);

    /* ttl and replace reach their callbacks; persist and expire_at reach touch; a missing
     * counter is created with add. */
    CHECK_RC(polycache_cache_ttl(cache, "n", &n, &err), POLYCACHE_RESULT_OK, err);
    CHECK(n == POLYCACHE_TTL_NEVER);
    CHECK_RC(polycache_cache_ttl(cache, "absent", &n, &err), POLYCACHE_RESULT_MISS, err);
    CHECK(n == POLYCACHE_TTL_NEVER); /* untouched on a miss */
    CHECK_RC(polycache_cache_replace(cache, "n", (const uint8_t *)"7", 1, 3000, &flag, &err), POLYCACHE_RESULT_OK,
             err);
    CHECK(flag == true && s->last_ttl_ms == 3000);
    CHECK(holds(cache, "n", "7", 1));
    CHECK_RC(polycache_cache_replace(cache, "absent", (const uint8_t *)"7", 1, 3000, &flag, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(flag == false);
    CHECK(is_miss(cache, "absent"));
    CHECK_RC(polycache_cache_persist(cache, "n", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true && s->last_ttl_ms == POLYCACHE_TTL_NEVER);
    CHECK_RC(polycache_cache_incr_or_create(cache, "created", 5, &n, &err), POLYCACHE_RESULT_OK, err);
    CHECK(n == 5);
    CHECK(holds(cache, "created", "5", 1));
    CHECK_RC(polycache_cache_incr_or_create(cache, "n", 1, &n, &err), POLYCACHE_RESULT_OK, err);
    CHECK(n == 8);
    CHECK_RC(polycache_cache_delete(cache, "created", &flag, &err), POLYCACHE_RESULT_OK, err);

    /* The _many operations are built on the single-key callbacks. */
    const char *keys[] = {"k", "absent", "new"};
    polycache_value *values[3];
    CHECK_RC(polycache_cache_get_many(cache, keys, 3, values, &err), POLYCACHE_RESULT_OK, err);
    CHECK(values[0] != NULL && values[1] == NULL && values[2] != NULL);
    polycache_value_free(values[0]);
    polycache_value_free(values[2]);
    size_t deleted = 0;
    CHECK_RC(polycache_cache_delete_many(cache, keys, 3, &deleted, &err), POLYCACHE_RESULT_OK, err);
    CHECK(deleted == 2);

    /* An already-expired set removes; delete and clear reach remove and clear. */
    CHECK(set_str(cache, "gone", "x", POLYCACHE_TTL_NEVER));
    CHECK(set_str(cache, "gone", "x", 0));
    CHECK(find(s, (const uint8_t *)"app:1:gone", 10) < 0);
    CHECK_RC(polycache_cache_delete(cache, "n", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK(set_str(cache, "a", "1", POLYCACHE_TTL_NEVER));
    CHECK_RC(polycache_cache_clear(cache, &err), POLYCACHE_RESULT_OK, err);
    CHECK(is_miss(cache, "a"));

    /* The core's rules apply above the callbacks: the value size limit, the statistics. */
    polycache_stats stats;
    CHECK_RC(polycache_cache_stats(cache, &stats, &err), POLYCACHE_RESULT_OK, err);
    /* Reads and deletes of this test: 4 misses, 5 hits, 4 deletes. */
    CHECK(stats.misses == 4 && stats.hits == 5 && stats.deletes == 4);

    /* release runs once, when the cache is freed. */
    CHECK(s->releases == 0);
    polycache_cache_free(cache);
    CHECK(s->releases == 1);
    free_store(s);
}

static void test_callback_errors(void) {
    store *s = new_store();
    polycache_error *err = NULL;
    polycache_cache *cache = NULL;
    /* breaker_threshold=0: every call reaches the callbacks (no circuit breaker). */
    CHECK_RC(polycache_cache_open_custom(&FULL, s, "breaker_threshold=0", &cache, &err), POLYCACHE_RESULT_OK, err);
    polycache_value *v = NULL;

    /* An error kind comes back as its code, with the callback named in the message. */
    s->fail_with = POLYCACHE_RESULT_CONNECTION;
    CHECK_ERR(polycache_cache_get(cache, "k", &v, &err),
              POLYCACHE_RESULT_CONNECTION, err, "get callback returned connection");
    CHECK_RC(polycache_cache_set(cache, "k", (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, &err),
             POLYCACHE_RESULT_CONNECTION, err);
    s->fail_with = POLYCACHE_RESULT_TIMEOUT;
    CHECK_RC(polycache_cache_get(cache, "k", &v, &err), POLYCACHE_RESULT_TIMEOUT, err);

    /* Codes that are no error kind (PANIC, unknown values) become BACKEND. */
    s->fail_with = POLYCACHE_RESULT_PANIC;
    CHECK_RC(polycache_cache_get(cache, "k", &v, &err), POLYCACHE_RESULT_BACKEND, err);
    s->fail_with = 999;
    CHECK_ERR(polycache_cache_get(cache, "k", &v, &err), POLYCACHE_RESULT_BACKEND, err, "unknown (999)");

    /* OK without a value is an error, not a hit of garbage. */
    s->fail_with = POLYCACHE_RESULT_OK;
    s->forget_value = 1;
    CHECK_ERR(polycache_cache_get(cache, "k", &v, &err),
              POLYCACHE_RESULT_BACKEND, err, "without calling polycache_loader_output_set");
    s->forget_value = 0;
    CHECK(v == NULL);

    /* Errors count in the stats; afterwards the cache works again. */
    polycache_stats stats;
    CHECK_RC(polycache_cache_stats(cache, &stats, &err), POLYCACHE_RESULT_OK, err);
    CHECK(stats.errors == 6);
    CHECK(set_str(cache, "k", "fine", POLYCACHE_TTL_NEVER));
    CHECK(holds(cache, "k", "fine", 4));
    polycache_cache_free(cache);
    CHECK(s->releases == 1);

    /* fail_open: a failing backend reads as a miss. */
    s->releases = 0;
    CHECK_RC(polycache_cache_open_custom(&FULL, s, "fail_open=true", &cache, &err), POLYCACHE_RESULT_OK, err);
    s->fail_with = POLYCACHE_RESULT_CONNECTION;
    CHECK_RC(polycache_cache_get(cache, "k", &v, &err), POLYCACHE_RESULT_MISS, err);
    CHECK_RC(polycache_cache_set(cache, "k", (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, &err),
             POLYCACHE_RESULT_NOT_STORED, err);
    s->fail_with = POLYCACHE_RESULT_OK;
    polycache_cache_free(cache);
    CHECK(s->releases == 1);
    free_store(s);
}

static void test_missing_callbacks_and_nulls(void) {
    store *s = new_store();
    polycache_error *err = NULL;
    polycache_cache *sentinel = (polycache_cache *)&err, *cache = sentinel;

    /* get, set and remove are required. */
    polycache_backend_vtable no_get = FULL;
    no_get.get = NULL;
    CHECK_ERR(polycache_cache_open_custom(&no_get, s, NULL, &cache, &err),
              POLYCACHE_RESULT_NULL_PARAMETER, err, "vtable->get");
    polycache_backend_vtable no_remove = FULL;
    no_remove.remove = NULL;
    CHECK_RC(polycache_cache_open_custom(&no_remove, s, NULL, &cache, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_open_custom(NULL, s, NULL, &cache, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_cache_open_custom(&FULL, s, NULL, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    /* A bad option: the caller keeps user_data, release is not called. */
    CHECK_ERR(polycache_cache_open_custom(&FULL, s, "no_such_option=1", &cache, &err),
              POLYCACHE_RESULT_CONFIGURATION, err, "no_such_option");
    CHECK(cache == sentinel);
    CHECK(s->releases == 0);

    /* Optional callbacks left NULL: their operations are UNSUPPORTED; the rest works. */
    polycache_backend_vtable minimal = {cb_get, cb_set, NULL, cb_remove, NULL, NULL, NULL, NULL, NULL, NULL};
    CHECK_RC(polycache_cache_open_custom(&minimal, s, NULL, &cache, &err), POLYCACHE_RESULT_OK, err);
    bool flag = false;
    int64_t n = 0;
    CHECK(set_str(cache, "k", "1", POLYCACHE_TTL_NEVER));
    CHECK(holds(cache, "k", "1", 1));
    CHECK_ERR(polycache_cache_add(cache, "k", (const uint8_t *)"x", 1, POLYCACHE_TTL_NEVER, &flag, &err),
              POLYCACHE_RESULT_UNSUPPORTED, err, "no add callback");
    CHECK_RC(polycache_cache_touch(cache, "k", 1000, &flag, &err), POLYCACHE_RESULT_UNSUPPORTED, err);
    CHECK_RC(polycache_cache_incr(cache, "k", 1, &n, &err), POLYCACHE_RESULT_UNSUPPORTED, err);
    CHECK_RC(polycache_cache_clear(cache, &err), POLYCACHE_RESULT_UNSUPPORTED, err);
    CHECK_ERR(polycache_cache_ttl(cache, "k", &n, &err), POLYCACHE_RESULT_UNSUPPORTED, err, "no ttl callback");
    CHECK_ERR(polycache_cache_replace(cache, "k", (const uint8_t *)"x", 1, POLYCACHE_TTL_NEVER, &flag, &err),
              POLYCACHE_RESULT_UNSUPPORTED, err, "no replace callback");
    CHECK(holds(cache, "k", "1", 1));
    polycache_cache_free(cache); /* no release callback: nothing to call */
    CHECK(s->releases == 0);

    /* A get callback that passes NULL as its output gets NULL_PARAMETER back, no crash. */
    CHECK_RC(polycache_loader_output_set(NULL, (const uint8_t *)"x", 1, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    free_store(s);
}

int main(void) {
    test_every_operation();
    test_callback_errors();
    test_missing_callbacks_and_nulls();
    return check_summary();
}
