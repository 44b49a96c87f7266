/* The walkthrough of docs/c-api.md: named caches from a TOML text, get/set and errors, a
 * value computed once on a miss, a job serving a stale value while it refreshes, and a
 * backend of your own. Compiled and run (under valgrind and AddressSanitizer) by `make test`.
 *
 *   cc -std=c11 examples/c/walkthrough.c $(pkg-config --cflags --libs polycache)
 */
#include "polycache.h"

#include <stdio.h>
#include <string.h>

/* Prints what failed, frees the error, and gives main its exit status. */
static int report(const char *what, polycache_result rc, polycache_error *err) {
    fprintf(stderr, "%s: %s: %s\n", what, polycache_result_name(rc), polycache_error_message(err));
    polycache_error_free(err);
    return 1;
}

/* 1. The service: named caches from configuration text (JSON works the same way). */
static const char *CONFIG =
    "[default]\n"
    "location = \"memory://?max_entries=10000\"\n"
    "timeout = 300\n"
    "\n"
    "[sessions]\n"
    "location = \"memory://\"\n"
    "key_prefix = \"sess\"\n"
    "timeout = \"none\"\n";

/* 3. A loader: computes a value on a miss. user_data is ours; polycache copies the bytes. */
static polycache_result render_page(void *user_data, const char *key, polycache_loader_output *output) {
    int *renders = user_data;
    char page[64];
    int len = snprintf(page, sizeof page, "<h1>%s</h1>", key);
    (*renders)++;
    return polycache_loader_output_set(output, (const uint8_t *)page, (size_t)len, NULL);
}

/* 5. A backend of your own: here, one that forwards to another polycache cache and counts
 * the calls. Keys arrive as full keys ("prefix:version:key"), not NUL-terminated. */
typedef struct {
    polycache_cache *store;
    unsigned long calls;
} forwarder;

static void key_text(char *buf, size_t cap, const uint8_t *key, size_t len) {
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(buf, key, n);
    buf[n] = '\0';
}

static polycache_result fw_get(void *ud, const uint8_t *key, size_t len, polycache_loader_output *output) {
    forwarder *fw = ud;
    char k[256];
    key_text(k, sizeof k, key, len);
    __atomic_add_fetch(&fw->calls, 1, __ATOMIC_RELAXED);
    polycache_value *value = NULL;
    polycache_result rc = polycache_cache_get(fw->store, k, &value, NULL);
    if (rc == POLYCACHE_RESULT_OK) {
        rc = polycache_loader_output_set(output, polycache_value_data(value), polycache_value_len(value), NULL);
        polycache_value_free(value);
    }
    return rc; /* OK, MISS, or the error code */
}

static polycache_result fw_set(void *ud, const uint8_t *key, size_t len, const uint8_t *value, size_t value_len,
                               int64_t ttl_ms) {
    forwarder *fw = ud;
    char k[256];
    key_text(k, sizeof k, key, len);
    __atomic_add_fetch(&fw->calls, 1, __ATOMIC_RELAXED);
    return polycache_cache_set(fw->store, k, value, value_len, ttl_ms, NULL);
}

static polycache_result fw_remove(void *ud, const uint8_t *key, size_t len, bool *removed_out) {
    forwarder *fw = ud;
    char k[256];
    key_text(k, sizeof k, key, len);
    __atomic_add_fetch(&fw->calls, 1, __ATOMIC_RELAXED);
    return polycache_cache_delete(fw->store, k, removed_out, NULL);
}

int main(void) {
    polycache_error *err = NULL;
    polycache_result rc;

    /* 1. Open the configured caches and take two of them out; free the set when done. */
    polycache_caches *caches = NULL;
    rc = polycache_caches_from_toml(CONFIG, &caches, &err);
    if (rc != POLYCACHE_RESULT_OK) {
        return report("caches", rc, err);
    }
    polycache_cache *cache = NULL, *sessions = NULL;
    if ((rc = polycache_caches_get(caches, "default", &cache, &err)) != POLYCACHE_RESULT_OK ||
        (rc = polycache_caches_get(caches, "sessions", &sessions, &err)) != POLYCACHE_RESULT_OK) {
        return report("caches_get", rc, err);
    }
    polycache_caches_free(caches); /* the cache handles live on */

    /* 2. Bytes in, bytes out. A miss is a code; errors come with a message. */
    rc = polycache_cache_set(sessions, "alice", (const uint8_t *)"token-1", 7, POLYCACHE_TTL_DEFAULT, &err);
    if (rc != POLYCACHE_RESULT_OK) {
        return report("set", rc, err);
    }
    polycache_value *value = NULL;
    rc = polycache_cache_get(sessions, "alice", &value, &err);
    if (rc == POLYCACHE_RESULT_OK) {
        printf("session: %.*s\n", (int)polycache_value_len(value), (const char *)polycache_value_data(value));
        polycache_value_free(value);
    } else if (rc != POLYCACHE_RESULT_MISS) {
        return report("get", rc, err);
    }
    int64_t n = 0;
    rc = polycache_cache_incr(cache, "no-such-counter", 1, &n, &err);
    printf("incr of a missing key: %s (%s)\n", polycache_result_name(rc), polycache_error_message(err));
    polycache_error_free(err);
    err = NULL;

    /* 3. Compute on a miss, once: concurrent callers of one key share one loader call. */
    int renders = 0;
    for (int i = 0; i < 3; i++) {
        rc = polycache_cache_get_or_set_with(cache, "page:/home", render_page, &renders, 60000, &value, &err);
        if (rc != POLYCACHE_RESULT_OK) {
            return report("get_or_set_with", rc, err);
        }
        polycache_value_free(value);
    }
    printf("3 reads, %d render\n", renders);

    /* 4. A job: values fresh for 10 minutes, then served stale while one background fetch
     * refreshes them. The job owns no user data here (release is NULL). */
    int fetches = 0;
    polycache_job *job = NULL;
    rc = polycache_job_new(cache, render_page, &fetches, NULL, 600000, POLYCACHE_TTL_DEFAULT, true,
                           POLYCACHE_TTL_DEFAULT, &job, &err);
    if (rc != POLYCACHE_RESULT_OK) {
        return report("job_new", rc, err);
    }
    polycache_status status;
    rc = polycache_job_get(job, "page:/about", &value, &status, &err);
    if (rc != POLYCACHE_RESULT_OK) {
        return report("job_get", rc, err);
    }
    printf("job: %s, %.*s\n", polycache_status_name(status), (int)polycache_value_len(value),
           (const char *)polycache_value_data(value));
    polycache_value_free(value);
    polycache_job_free(job); /* before `fetches` goes out of scope: no refresh is running */

    /* 5. A backend of your own. `options` takes what every URL takes. */
    forwarder fw = {cache, 0};
    polycache_backend_vtable vtable = {0};
    vtable.get = fw_get;
    vtable.set = fw_set;
    vtable.remove = fw_remove; /* add, touch, incr, clear: NULL means unsupported */
    polycache_cache *custom = NULL;
    rc = polycache_cache_open_custom(&vtable, &fw, "key_prefix=mine", &custom, &err);
    if (rc != POLYCACHE_RESULT_OK) {
        return report("open_custom", rc, err);
    }
    polycache_cache_set(custom, "k", (const uint8_t *)"v", 1, POLYCACHE_TTL_NEVER, NULL);
    bool present = false;
    polycache_cache_has_key(custom, "k", &present, NULL);
    printf("custom backend: k present=%d after %lu calls\n", present, fw.calls);
    polycache_cache_free(custom);

    polycache_stats stats;
    polycache_cache_stats(cache, &stats, NULL);
    printf("default: hits=%llu misses=%llu refreshes=%llu\n", (unsigned long long)stats.hits,
           (unsigned long long)stats.misses, (unsigned long long)stats.refreshes);
    polycache_cache_free(sessions);
    polycache_cache_free(cache);
    return 0;
}
