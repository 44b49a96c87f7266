/*
 * Tests of jobs from C (polycache_job_*): stale-while-revalidate with a fetch callback,
 * background refreshes, invalidate, delete, fetch_on_miss, failing fetches, lifetimes, the
 * release of user data. Background work is awaited by polling with generous bounds, never
 * timed. Run by tests/c/run.sh under valgrind and AddressSanitizer.
 */
#include "check.h"

typedef struct {
    int calls;              /* fetches so far (atomic: refresh threads call too) */
    polycache_result code;  /* what the fetch returns */
    int64_t fresh_for_ms;   /* when > 0, set as the value's own lifetime */
    int released;           /* release calls (atomic) */
} source;

static polycache_result fetch(void *user_data, const char *key, polycache_loader_output *output) {
    source *src = user_data;
    int n = __atomic_add_fetch(&src->calls, 1, __ATOMIC_SEQ_CST);
    if (src->code != POLYCACHE_RESULT_OK) {
        return src->code;
    }
    char text[64];
    int len = snprintf(text, sizeof text, "%s#%d", key, n);
    polycache_result rc = polycache_loader_output_set(output, (const uint8_t *)text, (size_t)len, NULL);
    if (rc == POLYCACHE_RESULT_OK && src->fresh_for_ms > 0) {
        rc = polycache_loader_output_set_fresh_for(output, src->fresh_for_ms, NULL);
    }
    return rc;
}

static void release(void *user_data) {
    source *src = user_data;
    __atomic_add_fetch(&src->released, 1, __ATOMIC_SEQ_CST);
}

typedef struct {
    polycache_job *job;
    const char *key;
} job_key;

static int refresh_done(void *arg) {
    job_key *jk = arg;
    bool running = true;
    return polycache_job_is_refreshing(jk->job, jk->key, &running, NULL) == POLYCACHE_RESULT_OK && !running;
}

static int released(void *arg) {
    source *src = arg;
    return __atomic_load_n(&src->released, __ATOMIC_SEQ_CST) == 1;
}

/* Reads key through the job; true when it returned OK with `want` and status `status`. */
static int job_reads(polycache_job *job, const char *key, const char *want, polycache_status status) {
    polycache_value *value = NULL;
    polycache_status got = 99;
    polycache_error *err = NULL;
    polycache_result rc = polycache_job_get(job, key, &value, &got, &err);
    int ok = rc == POLYCACHE_RESULT_OK && got == status && polycache_value_len(value) == strlen(want) &&
             memcmp(polycache_value_data(value), want, strlen(want)) == 0;
    if (!ok) {
        fprintf(stderr, "job_get %s: %s (%s), status %s, value %.*s; expected %s %s\n", key,
                polycache_result_name(rc), polycache_error_message(err), polycache_status_name(got),
                (int)polycache_value_len(value), (const char *)polycache_value_data(value), want,
                polycache_status_name(status));
    }
    polycache_value_free(value);
    polycache_error_free(err);
    return ok;
}

static void test_stale_while_revalidate(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    source src = {0, POLYCACHE_RESULT_OK, 0, 0};
    polycache_job *job = NULL;
    /* Fetched values are fresh for a minute: only values we make stale on purpose are. */
    CHECK_RC(polycache_job_new(cache, fetch, &src, release, 60000, POLYCACHE_TTL_DEFAULT, true,
                               POLYCACHE_TTL_NEVER, &job, &err),
             POLYCACHE_RESULT_OK, err);
    job_key jk = {job, "report"};

    CHECK(job_reads(job, "report", "report#1", POLYCACHE_STATUS_MISS)); /* fetched now */
    CHECK(job_reads(job, "report", "report#1", POLYCACHE_STATUS_HIT));
    /* A value fresh for 1 ms, then read well after. */
    CHECK_RC(polycache_job_set(job, "report", (const uint8_t *)"old", 3, 1, &err), POLYCACHE_RESULT_OK, err);
    sleep_ms(20);
    CHECK(job_reads(job, "report", "old", POLYCACHE_STATUS_STALE)); /* served at once... */
    CHECK(wait_until(refresh_done, &jk, 10000));                          /* ...refreshed behind */
    CHECK(__atomic_load_n(&src.calls, __ATOMIC_SEQ_CST) == 2);
    CHECK(job_reads(job, "report", "report#2", POLYCACHE_STATUS_HIT));

    /* invalidate marks it stale and refreshes in the background. */
    bool flag = false;
    CHECK_RC(polycache_job_invalidate(job, "report", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK(wait_until(refresh_done, &jk, 10000));
    CHECK(job_reads(job, "report", "report#3", POLYCACHE_STATUS_HIT));

    /* refresh fetches now; set stores a value of our own. */
    polycache_value *value = NULL;
    CHECK_RC(polycache_job_refresh(job, "report", &value, &err), POLYCACHE_RESULT_OK, err);
    CHECK(polycache_value_len(value) == 8 && memcmp(polycache_value_data(value), "report#4", 8) == 0);
    polycache_value_free(value);
    CHECK_RC(polycache_job_set(job, "report", (const uint8_t *)"mine", 4, POLYCACHE_TTL_DEFAULT, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(job_reads(job, "report", "mine", POLYCACHE_STATUS_HIT));

    /* delete: the next read misses and fetches. */
    CHECK_RC(polycache_job_delete(job, "report", &flag, &err), POLYCACHE_RESULT_OK, err);
    CHECK(flag == true);
    CHECK(job_reads(job, "report", "report#5", POLYCACHE_STATUS_MISS));

    polycache_stats stats;
    CHECK_RC(polycache_cache_stats(cache, &stats, &err), POLYCACHE_RESULT_OK, err);
    CHECK(stats.stale_hits == 1);
    CHECK(stats.refreshes == 5);

    /* The job owns the user data: released once after the job is freed. */
    CHECK(src.released == 0);
    polycache_job_free(job);
    CHECK(wait_until(released, &src, 10000));
    polycache_cache_free(cache);
}

static void test_fetch_in_background_on_miss(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    source src = {0, POLYCACHE_RESULT_OK, 0, 0};
    polycache_job *job = NULL;
    CHECK_RC(polycache_job_new(cache, fetch, &src, NULL, POLYCACHE_TTL_DEFAULT, POLYCACHE_TTL_NEVER, false,
                               POLYCACHE_TTL_DEFAULT, &job, &err),
             POLYCACHE_RESULT_OK, err);
    polycache_value *sentinel = (polycache_value *)&err, *value = sentinel;
    polycache_status status = 99;
    CHECK_RC(polycache_job_get(job, "k", &value, &status, &err), POLYCACHE_RESULT_MISS, err);
    CHECK(value == sentinel && status == 99);
    job_key jk = {job, "k"};
    CHECK(wait_until(refresh_done, &jk, 10000));
    CHECK(job_reads(job, "k", "k#1", POLYCACHE_STATUS_HIT));
    polycache_job_free(job);
    polycache_cache_free(cache);
}

static void test_failing_fetch_and_lifetimes(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    source src = {0, POLYCACHE_RESULT_CONNECTION, 0, 0};
    polycache_job *job = NULL;
    CHECK_RC(polycache_job_new(cache, fetch, &src, release, 60000, POLYCACHE_TTL_DEFAULT, true, 600000, &job, &err),
             POLYCACHE_RESULT_OK, err);
    polycache_value *sentinel = (polycache_value *)&err, *value = sentinel;
    polycache_status status = 99;
    CHECK_ERR(polycache_job_get(job, "k", &value, &status, &err), POLYCACHE_RESULT_LOADER_FAILED, err, "connection");
    CHECK(value == sentinel && status == 99);
    CHECK_RC(polycache_job_refresh(job, "k", &value, &err), POLYCACHE_RESULT_LOADER_FAILED, err);

    /* A per-value lifetime set by the fetch wins over the job's 60 s. */
    src.code = POLYCACHE_RESULT_OK;
    src.fresh_for_ms = 30;
    CHECK(job_reads(job, "short", "short#3", POLYCACHE_STATUS_MISS));
    sleep_ms(100);
    value = NULL;
    CHECK_RC(polycache_job_get(job, "short", &value, &status, &err), POLYCACHE_RESULT_OK, err);
    CHECK(status == POLYCACHE_STATUS_STALE);
    polycache_value_free(value);
    job_key jk = {job, "short"};
    CHECK(wait_until(refresh_done, &jk, 10000));

    polycache_job_free(job);
    CHECK(wait_until(released, &src, 10000));
    polycache_cache_free(cache);
}

static void test_bad_arguments(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    source src = {0, POLYCACHE_RESULT_OK, 0, 0};
    polycache_job *sentinel = (polycache_job *)&err, *job = sentinel;

    CHECK_ERR(polycache_job_new(cache, fetch, &src, release, 0, POLYCACHE_TTL_DEFAULT, true, POLYCACHE_TTL_NEVER, &job,
                            &err), POLYCACHE_RESULT_CONFIGURATION, err, "lifetime_ms");
    CHECK_RC(polycache_job_new(cache, fetch, &src, release, 1000, -7, true, POLYCACHE_TTL_NEVER, &job, &err),
             POLYCACHE_RESULT_CONFIGURATION, err);
    CHECK_RC(polycache_job_new(cache, fetch, &src, release, 1000, POLYCACHE_TTL_NEVER, true, 0, &job, &err),
             POLYCACHE_RESULT_CONFIGURATION, err);
    CHECK_RC(polycache_job_new(cache, NULL, &src, release, 1000, POLYCACHE_TTL_NEVER, true, 0, &job, &err),
             POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_new(NULL, fetch, &src, release, 1000, POLYCACHE_TTL_NEVER, true, 0, &job, &err),
             POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK(job == sentinel);
    CHECK(src.released == 0); /* failed calls leave user_data with the caller */

    job = NULL;
    CHECK_RC(polycache_job_new(cache, fetch, &src, NULL, POLYCACHE_TTL_DEFAULT, POLYCACHE_TTL_DEFAULT, true,
                               POLYCACHE_TTL_DEFAULT, &job, &err),
             POLYCACHE_RESULT_OK, err);
    polycache_value *value = NULL;
    polycache_status status;
    bool flag;
    CHECK_RC(polycache_job_get(job, "k", NULL, &status, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_get(job, "k", &value, NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_get(NULL, "k", &value, &status, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_get(job, NULL, &value, &status, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_invalidate(job, "k", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_delete(job, NULL, &flag, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_is_refreshing(job, "k", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_refresh(job, "k", NULL, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_set(job, "k", NULL, 3, POLYCACHE_TTL_DEFAULT, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK_RC(polycache_job_set(job, "k", (const uint8_t *)"v", 1, 0, &err), POLYCACHE_RESULT_CONFIGURATION, err);
    CHECK_RC(polycache_loader_output_set_fresh_for(NULL, 10, &err), POLYCACHE_RESULT_NULL_PARAMETER, err);
    CHECK(value == NULL);
    CHECK(strcmp(polycache_status_name(POLYCACHE_STATUS_HIT), "hit") == 0);
    CHECK(strcmp(polycache_status_name(POLYCACHE_STATUS_STALE), "stale") == 0);
    CHECK(strcmp(polycache_status_name(POLYCACHE_STATUS_MISS), "miss") == 0);
    CHECK(strcmp(polycache_status_name(77), "unknown") == 0);
    polycache_job_free(job);
    polycache_job_free(NULL);
    polycache_cache_free(cache);
}

typedef struct {
    int calls;   /* fetches so far (atomic) */
    int entered; /* 1 once a fetch is running (atomic) */
} slow_source;

/* A fetch that takes 200 ms: stop_refreshes must wait for it. */
static polycache_result slow_fetch(void *user_data, const char *key, polycache_loader_output *output) {
    slow_source *src = user_data;
    (void)key;
    int n = __atomic_add_fetch(&src->calls, 1, __ATOMIC_SEQ_CST);
    if (n > 1) {
        __atomic_store_n(&src->entered, 1, __ATOMIC_SEQ_CST);
        sleep_ms(200);
    }
    return polycache_loader_output_set(output, (const uint8_t *)"v", 1, NULL);
}

static int fetch_entered(void *arg) {
    slow_source *src = arg;
    return __atomic_load_n(&src->entered, __ATOMIC_SEQ_CST) == 1;
}

/* Last: it stops the process-wide refresh pool for good. */
static void test_stop_refreshes_at_exit(void) {
    polycache_cache *cache = open_cache("memory://");
    polycache_error *err = NULL;
    slow_source src = {0, 0};
    polycache_job *job = NULL;
    CHECK_RC(polycache_job_new(cache, slow_fetch, &src, NULL, 60000, POLYCACHE_TTL_DEFAULT, true,
                               POLYCACHE_TTL_NEVER, &job, &err),
             POLYCACHE_RESULT_OK, err);
    CHECK(job_reads(job, "k", "v", POLYCACHE_STATUS_MISS));
    bool present = false;
    CHECK_RC(polycache_job_invalidate(job, "k", &present, &err), POLYCACHE_RESULT_OK, err);
    CHECK(wait_until(fetch_entered, &src, 10000));
    /* Waits for the running refresh: when it returns, no thread is inside slow_fetch. */
    CHECK(polycache_stop_refreshes(10000) == true);
    CHECK(__atomic_load_n(&src.calls, __ATOMIC_SEQ_CST) == 2);
    /* No refresh runs any more: a stale value is served, and stays. */
    CHECK_RC(polycache_job_invalidate(job, "k", &present, &err), POLYCACHE_RESULT_OK, err);
    CHECK(job_reads(job, "k", "v", POLYCACHE_STATUS_STALE));
    sleep_ms(50);
    CHECK(__atomic_load_n(&src.calls, __ATOMIC_SEQ_CST) == 2);
    CHECK(polycache_stop_refreshes(-5) == true);
    polycache_job_free(job);
    polycache_cache_free(cache);
}

int main(void) {
    test_stale_while_revalidate();
    test_fetch_in_background_on_miss();
    test_failing_fetch_and_lifetimes();
    test_bad_arguments();
    test_stop_refreshes_at_exit();
    return check_summary();
}
