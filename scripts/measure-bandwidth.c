/* Memory read bandwidth, for judging how close token generation gets to the memory limit.
 * Built and run by scripts/measure-bandwidth, which explains the method. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

struct worker {
    const __m256i *begin;
    size_t n_vectors;
    int passes;
    pthread_barrier_t *start;
    pthread_barrier_t *done;
    double began;
    double ended;
    /* Plain integers: calloc does not give the 32-byte alignment an __m256i member needs. */
    uint64_t sum[4];
};

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Eight independent accumulators keep eight 32-byte loads in flight per iteration, so the loop
 * is bound by the loads, not by a chain of dependent adds. */
static __m256i read_all(const __m256i *p, size_t n_vectors) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    __m256i a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < n_vectors; i += 8) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256(p + i));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256(p + i + 1));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256(p + i + 2));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256(p + i + 3));
        a4 = _mm256_add_epi64(a4, _mm256_load_si256(p + i + 4));
        a5 = _mm256_add_epi64(a5, _mm256_load_si256(p + i + 5));
        a6 = _mm256_add_epi64(a6, _mm256_load_si256(p + i + 6));
        a7 = _mm256_add_epi64(a7, _mm256_load_si256(p + i + 7));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    a4 = _mm256_add_epi64(_mm256_add_epi64(a4, a5), _mm256_add_epi64(a6, a7));
    return _mm256_add_epi64(a0, a4);
}

static void *run_worker(void *arg) {
    struct worker *w = arg;
    /* Writing its own slice first makes every page real memory: untouched anonymous pages all
     * map the kernel's one zero page, which would be read from cache. */
    memset((void *)w->begin, 0x5a, w->n_vectors * sizeof(__m256i));
    __m256i sum = _mm256_setzero_si256();
    for (int pass = 0; pass < w->passes; pass++) {
        pthread_barrier_wait(w->start);
        w->began = now_seconds();
        sum = _mm256_add_epi64(sum, read_all(w->begin, w->n_vectors));
        w->ended = now_seconds();
        pthread_barrier_wait(w->done);
    }
    _mm256_storeu_si256((__m256i *)w->sum, sum);
    return NULL;
}

/* Best pass, in bytes per second, of `threads` threads each reading its own slice of `bytes`. */
static double measure(char *buffer, size_t bytes, int threads, int passes, uint64_t *checksum) {
    size_t slice_vectors = bytes / sizeof(__m256i) / (size_t)threads / 8 * 8;
    pthread_barrier_t start, done;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&done, NULL, (unsigned)threads + 1);
    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    if (!workers || !ids) {
        fprintf(stderr, "measure-bandwidth: out of memory\n");
        exit(1);
    }
    for (int t = 0; t < threads; t++) {
        workers[t] = (struct worker){
            .begin = (const __m256i *)buffer + (size_t)t * slice_vectors,
            .n_vectors = slice_vectors,
            .passes = passes,
            .start = &start,
            .done = &done,
        };
        pthread_create(&ids[t], NULL, run_worker, &workers[t]);
    }
    /* Each worker times its own read and a pass spans the earliest start to the latest end, so
     * a thread descheduled on the shared machine can only make a pass look slower, never
     * faster (timing in this thread could miss reads done before it was scheduled again). */
    double best = 1e30;
    for (int pass = 0; pass < passes; pass++) {
        pthread_barrier_wait(&start);
        pthread_barrier_wait(&done);
        double began = workers[0].began, ended = workers[0].ended;
        for (int t = 1; t < threads; t++) {
            if (workers[t].began < began) began = workers[t].began;
            if (workers[t].ended > ended) ended = workers[t].ended;
        }
        if (ended - began < best) best = ended - began;
    }
    for (int t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        const uint64_t *lanes = workers[t].sum;
        *checksum += lanes[0] + lanes[1] + lanes[2] + lanes[3];
    }
    free(workers);
    free(ids);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&done);
    return (double)(slice_vectors * sizeof(__m256i) * (size_t)threads) / best;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: measure-bandwidth SIZE_MIB THREADS PASSES {small|huge}\n");
        return 2;
    }
    size_t bytes = (size_t)strtoull(argv[1], NULL, 10) << 20;
    int threads = atoi(argv[2]);
    int passes = atoi(argv[3]);
    int huge = strcmp(argv[4], "huge") == 0;
    if (bytes == 0 || threads < 1 || passes < 1) {
        fprintf(stderr, "measure-bandwidth: size, threads and passes must be positive\n");
        return 2;
    }
    char *buffer = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buffer == MAP_FAILED) {
        perror("measure-bandwidth: mmap");
        return 1;
    }
    madvise(buffer, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);

    uint64_t checksum = 0;
    double single = measure(buffer, bytes, 1, passes, &checksum);
    double all = measure(buffer, bytes, threads, passes, &checksum);
    /* The checksum is printed so that the compiler cannot drop the reads. */
    printf("pages=%s single=%.2f threads=%d all=%.2f checksum=%llx\n", huge ? "huge" : "small",
           single / 1e9, threads, all / 1e9, (unsigned long long)checksum);
    munmap(buffer, bytes);
    return 0;
}
