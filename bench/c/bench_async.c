/* bench/c/async.sh's program: non-blocking gets with 256 in flight on one thread (an epoll
 * loop over a polycache_queue) against blocking polycache_cache_get calls from 8 threads, on
 * the same redis:// cache, with 100-byte values.
 *
 * Each round times N gets each way, alternating, so that load from other processes weighs
 * on both alike; prints calls/s of each (the best round) and their ratio.
 * Usage: bench_async REDIS_URL [N]   (default 200,000 gets per round)
 */
#define _POSIX_C_SOURCE 200809L

#include "polycache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 3
#define THREADS 8
#define IN_FLIGHT 256
#define KEYS 1024

static char keys[KEYS][32];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(polycache_result rc, const char *what) {
    if (rc != POLYCACHE_RESULT_OK) {
        fprintf(stderr, "%s: %s\n", what, polycache_result_name(rc));
        exit(1);
    }
}

struct worker {
    polycache_cache *cache;
    long n;
    int id;
};

static void *blocking_gets(void *arg) {
    struct worker *w = arg;
    for (long i = 0; i < w->n; i++) {
        polycache_value *value = NULL;
        check(polycache_cache_get(w->cache, keys[(i * THREADS + w->id) % KEYS], &value, NULL), "get");
        polycache_value_free(value);
    }
    return NULL;
}

/* Calls per second of n blocking gets spread over THREADS threads. */
static double blocking(polycache_cache *cache, long n) {
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    double start = now_s();
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (struct worker){cache, n / THREADS, t};
        pthread_create(&threads[t], NULL, blocking_gets, &workers[t]);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
    }
    return (double)(n / THREADS * THREADS) / (now_s() - start);
}

/* Calls per second of n non-blocking gets, IN_FLIGHT at a time, on this thread. */
static double nonblocking(polycache_cache *cache, polycache_queue *queue, int epfd, long n) {
    long started = 0, done = 0;
    polycache_completion batch[IN_FLIGHT];
    double start = now_s();
    while (done < n) {
        while (started < n && started - done < IN_FLIGHT) {
            check(polycache_cache_get_start(cache, queue, keys[started % KEYS], NULL, NULL), "get_start");
            started++;
        }
        struct epoll_event ready;
        if (epoll_wait(epfd, &ready, 1, 60000) != 1) {
            fprintf(stderr, "no completion within 60 s\n");
            exit(1);
        }
        size_t count = 0;
        check(polycache_queue_drain(queue, batch, IN_FLIGHT, &count, NULL), "drain");
        for (size_t i = 0; i < count; i++) {
            check(batch[i].result, "a non-blocking get");
            polycache_value_free(batch[i].value);
        }
        done += (long)count;
    }
    return (double)n / (now_s() - start);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_async REDIS_URL [N]\n");
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 200000;
    polycache_cache *cache = NULL;
    check(polycache_cache_open(argv[1], &cache, NULL), "open");
    uint8_t value[100];
    memset(value, 'v', sizeof value);
    for (int i = 0; i < KEYS; i++) {
        snprintf(keys[i], sizeof keys[i], "bench:%d", i);
        check(polycache_cache_set(cache, keys[i], value, sizeof value, POLYCACHE_TTL_NEVER, NULL), "set");
    }
    polycache_queue *queue = NULL;
    check(polycache_queue_new(&queue, NULL), "queue");
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event watch = {.events = EPOLLIN};
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, polycache_queue_fd(queue), &watch) != 0) {
        perror("epoll");
        return 1;
    }
    /* Warm up both paths (connections, the runtime's threads). */
    blocking(cache, 8000);
    nonblocking(cache, queue, epfd, 8000);
    double best_blocking = 0, best_nonblocking = 0;
    for (int r = 0; r < ROUNDS; r++) {
        double b = blocking(cache, n);
        double a = nonblocking(cache, queue, epfd, n);
        best_blocking = b > best_blocking ? b : best_blocking;
        best_nonblocking = a > best_nonblocking ? a : best_nonblocking;
    }
    printf("redis:// get, 100-byte values, N=%ld per round, best of %d rounds\n", n, ROUNDS);
    printf("%-44s %12s\n", "way", "calls/s");
    printf("%-44s %12.0f\n", "blocking polycache_cache_get, 8 threads", best_blocking);
    printf("%-44s %12.0f\n", "polycache_cache_get_start, 256 in flight", best_nonblocking);
    printf("non-blocking / blocking: %.2fx\n", best_nonblocking / best_blocking);
    close(epfd);
    polycache_queue_free(queue);
    polycache_cache_free(cache);
    return 0;
}
