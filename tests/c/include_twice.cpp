// polycache.h must work from C++ (extern "C", no C-only syntax) and survive being included
// twice (its include guard). Compiled with -fsyntax-only by tests/c/run.sh.
#include "polycache.h"
#include "polycache.h"

static_assert(sizeof(polycache_stats) == 8 * sizeof(uint64_t), "polycache_stats is eight counters");

int use_the_api() {
    polycache_cache *cache = nullptr;
    polycache_error *err = nullptr;
    if (polycache_cache_open("memory://", &cache, &err) != POLYCACHE_RESULT_OK) {
        polycache_error_free(err);
        return 1;
    }
    const char *keys[] = {"a", "b"};
    polycache_value *values[2] = {nullptr, nullptr};
    polycache_cache_get_many(cache, keys, 2, values, nullptr);
    polycache_cache_free(cache);
    return 0;
}
