/*
 * Tests of locks from C (polycache_lock_*): one owner at a time, non-owners refused with the
 * lock untouched, extend and reacquire, a lapsed holder, bad arguments. Run by
 * tests/c/run.sh under valgrind and AddressSanitizer.
 */
#include "check.h"

#define TOKEN(s) (const uint8_t *)(s), strlen(s)

static polycache_lock *open_lock(polycache_cache *cache, const char *name, int64_t timeout_ms) {
    polycache_lock *lock = NULL;
    polycache_error *err = NULL;
    CHECK_RC(polycache_lock_new(cache, name, timeout_ms, &lock, &err), POLYCACHE_RESULT_OK, err);
    return lock;
}

static void test_owners_and_refusals(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_lock *lock = open_lock(cache, "job", 30000);
    polycache_error *err = NULL;
    bool acquired = false, locked = true, owned = false;

    CHECK_RC(polycache_lock_locked(lock, &locked, &err), POLYCACHE_RESULT_OK, err);
    CHECK(!locked);
    CHECK_RC(polycache_lock_acquire(lock, TOKEN("a"), false, 0, 0, &acquired, &err), POLYCACHE_RESULT_OK, err);
    CHECK(acquired);
    CHECK_RC(polycache_lock_acquire(lock, TOKEN("b"), false, 0, 0, &acquired, &err), POLYCACHE_RESULT_OK, err);
    CHECK(!acquired);
    /* Blocking, but the next try would come after the blocking timeout: gives up. */
    CHECK_RC(polycache_lock_acquire(lock, TOKEN("b"), true, 1, 50, &acquired, &err), POLYCACHE_RESULT_OK, err);
    CHECK(!acquired);
    CHECK_RC(polycache_lock_release(lock, TOKEN("b"), &err), POLYCACHE_RESULT_LOCK_NOT_OWNED, err);
    CHECK_RC(polycache_lock_extend(lock, TOKEN("b"), 1000, false, &err), POLYCACHE_RESULT_LOCK_NOT_OWNED, err);
    CHECK_RC(polycache_lock_owned(lock, TOKEN("a"), &owned, &err), POLYCACHE_RESULT_OK, err);
    CHECK(owned);
    CHECK_RC(polycache_lock_extend(lock, TOKEN("a"), 60000, false, &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_lock_reacquire(lock, TOKEN("a"), &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_lock_release(lock, TOKEN("a"), &err), POLYCACHE_RESULT_OK, err);
    CHECK_RC(polycache_lock_locked(lock, &locked, &err), POLYCACHE_RESULT_OK, err);
    CHECK(!locked);
    CHECK(strcmp(polycache_result_name(POLYCACHE_RESULT_LOCK_NOT_OWNED), "lock_not_owned") == 0);
    polycache_lock_free(lock);
    polycache_cache_free(cache);
}

static void test_lapse_and_no_timeout(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_lock *brief = open_lock(cache, "brief", 100);
    polycache_lock *forever = open_lock(cache, "forever", POLYCACHE_TTL_NEVER);
    polycache_error *err = NULL;
    bool acquired = false;

    CHECK_RC(polycache_lock_acquire(brief, TOKEN("dead"), false, 0, 0, &acquired, &err), POLYCACHE_RESULT_OK, err);
    CHECK(acquired);
    /* Nobody releases it: a blocking acquire gets it once it lapses. */
    CHECK_RC(polycache_lock_acquire(brief, TOKEN("next"), true, 60000, 10, &acquired, &err), POLYCACHE_RESULT_OK,
             err);
    CHECK(acquired);
    CHECK_RC(polycache_lock_release(brief, TOKEN("dead"), &err), POLYCACHE_RESULT_LOCK_NOT_OWNED, err);
    CHECK_RC(polycache_lock_release(brief, TOKEN("next"), &err), POLYCACHE_RESULT_OK, err);

    CHECK_RC(polycache_lock_acquire(forever, TOKEN("n"), true, POLYCACHE_TTL_NEVER, 10, &acquired, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(acquired);
    CHECK_ERR(polycache_lock_extend(forever, TOKEN("n"), 1000, false, &err), POLYCACHE_RESULT_LOCK, err,
              "no timeout");
    CHECK_RC(polycache_lock_release(forever, TOKEN("n"), &err), POLYCACHE_RESULT_OK, err);
    polycache_lock_free(brief);
    polycache_lock_free(forever);
    polycache_cache_free(cache);
}

static void test_bad_arguments(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_lock *lock = NULL;
    polycache_error *err = NULL;
    bool out = false;

    CHECK_ERR(polycache_lock_new(cache, "job", 0, &lock, &err), POLYCACHE_RESULT_CONFIGURATION, err, "timeout_ms");
    CHECK_ERR(polycache_lock_new(cache, "job", -7, &lock, &err), POLYCACHE_RESULT_CONFIGURATION, err, "timeout_ms");
    CHECK(lock == NULL);
    CHECK_RC(polycache_lock_new(NULL, "job", 1000, &lock, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    lock = open_lock(cache, "job", 1000);
    CHECK_ERR(polycache_lock_acquire(lock, TOKEN(""), false, 0, 0, &out, &err), POLYCACHE_RESULT_CONFIGURATION, err,
              "empty");
    CHECK_ERR(polycache_lock_acquire(lock, TOKEN("a"), true, -5, 0, &out, &err), POLYCACHE_RESULT_CONFIGURATION, err,
              "blocking_timeout_ms");
    CHECK_ERR(polycache_lock_acquire(lock, TOKEN("a"), true, 0, -1, &out, &err), POLYCACHE_RESULT_CONFIGURATION, err,
              "sleep_ms");
    CHECK_RC(polycache_lock_acquire(lock, NULL, 3, false, 0, 0, &out, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_lock_locked(NULL, &out, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_ERR(polycache_lock_extend(lock, TOKEN("a"), -1, false, &err), POLYCACHE_RESULT_CONFIGURATION, err,
              "additional_ms");
    polycache_lock_free(lock);
    polycache_lock_free(NULL);
    polycache_cache_free(cache);
}

int main(void) {
    test_owners_and_refusals();
    test_lapse_and_no_timeout();
    test_bad_arguments();
    return check_summary();
}
