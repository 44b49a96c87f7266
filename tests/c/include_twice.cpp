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

    polycache_caches *caches = nullptr;
    if (polycache_caches_from_toml("[default]\nlocation = \"memory://\"\n", &caches, nullptr) == POLYCACHE_RESULT_OK) {
        polycache_caches_free(caches);
    }
    polycache_backend_vtable vtable = {};  // every callback NULL: open_custom says which is missing
    polycache_cache *custom = nullptr;
    polycache_cache_open_custom(&vtable, nullptr, "key_prefix=cpp", &custom, nullptr);
    polycache_job *job = nullptr;
    polycache_job_free(job);
    return 0;
}
