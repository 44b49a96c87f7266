/* polycache from C: open an in-process cache, store and read bytes, count, read the stats.
 *
 *   cargo build -p polycache-ffi --release
 *   cc -std=c11 -Iinclude examples/c/quickstart.c target/release/libpolycache.a -lpthread -ldl -lm
 */
#include "polycache.h"

#include <stdio.h>
#include <string.h>

/* Prints what went wrong and frees the error; returns 1 for main to exit with. */
static int fail(const char *what, polycache_result rc, polycache_error *err) {
    fprintf(stderr, "%s failed: %s: %s\n", what, polycache_result_name(rc), polycache_error_message(err));
    polycache_error_free(err);
    return 1;
}

int main(void) {
    polycache_cache *cache = NULL;
    polycache_error *err = NULL;
    polycache_result rc;

    /* The embedded cache: at most 10,000 entries, values live 60 s unless told otherwise. */
    rc = polycache_cache_open("memory://?max_entries=10000&timeout=60", &cache, &err);
    if (rc != POLYCACHE_RESULT_OK) {
        return fail("open", rc, err);
    }

    /* Values are bytes: (pointer, length). Keys are NUL-terminated UTF-8. */
    const char *greeting = "hello from C";
    rc = polycache_cache_set(cache, "greeting", (const uint8_t *)greeting, strlen(greeting),
                             POLYCACHE_TTL_DEFAULT, &err);
    if (rc != POLYCACHE_RESULT_OK) {
        return fail("set", rc, err);
    }

    /* get hands back a value we own: read it, then free it. A miss is a code, not an error. */
    polycache_value *value = NULL;
    rc = polycache_cache_get(cache, "greeting", &value, &err);
    if (rc == POLYCACHE_RESULT_OK) {
        printf("greeting = %.*s\n", (int)polycache_value_len(value), (const char *)polycache_value_data(value));
        polycache_value_free(value);
    } else if (rc == POLYCACHE_RESULT_MISS) {
        printf("greeting is not cached\n");
    } else {
        return fail("get", rc, err);
    }

    /* Counters are ASCII decimal values; incr is atomic. */
    int64_t visits = 0;
    rc = polycache_cache_set(cache, "visits", (const uint8_t *)"41", 2, POLYCACHE_TTL_NEVER, &err);
    if (rc == POLYCACHE_RESULT_OK) {
        rc = polycache_cache_incr(cache, "visits", 1, &visits, &err);
    }
    if (rc != POLYCACHE_RESULT_OK) {
        return fail("set/incr", rc, err);
    }
    printf("visits = %lld\n", (long long)visits);

    polycache_stats stats;
    if (polycache_cache_stats(cache, &stats, NULL) == POLYCACHE_RESULT_OK) {
        printf("hits=%llu misses=%llu sets=%llu\n", (unsigned long long)stats.hits,
               (unsigned long long)stats.misses, (unsigned long long)stats.sets);
    }

    polycache_cache_free(cache);
    return 0;
}
