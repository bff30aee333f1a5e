/* Vector-unit peak probe for benchmarks/host.py (x86-64, built with -O2 -march=native).
 *
 * Prints one "key value" line per measurement:
 *   clock_ghz      4 dependent 1-cycle integer adds per loop iteration: iterations*4/time is
 *                  the core clock while the loop runs (boost included).
 *   fp32_gmacs     12 independent FMA chains (enough to cover latency 4 x 2 pipes and more) on
 *                  the widest float vector the build allows: the core's fp32 FMA throughput.
 *   int8_gmacs     the same with VPDPBUSD (u8 x s8 -> s32, 4 MACs per 32-bit lane), when the
 *                  build has AVX512-VNNI or AVX-VNNI: the core's int8 MAC throughput.
 * Times are this thread's CPU time; each figure is the best of 7 short repetitions, as other
 * processes (and hypervisor steal) can only make a run look slower.
 * The accumulators are printed so the compiler cannot drop the loops.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

/* CPU time of this thread, not wall time: on a shared machine the probe is preempted by other
 * processes, and wall time would count their slices as if this loop had run slower. */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

static double clock_ghz(long n) {
    long x = 0;
    double t = now();
    for (long i = 0; i < n; i++) {
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    }
    return 4.0 * n / (now() - t) / 1e9;
}

#if defined(__AVX512F__)
#define FVEC __m512
#define FLANES 16
#define FSET _mm512_set1_ps
#define FFMA _mm512_fmadd_ps
#define FSUM(v) _mm512_reduce_add_ps(v)
#else
#define FVEC __m256
#define FLANES 8
#define FSET _mm256_set1_ps
#define FFMA _mm256_fmadd_ps
static float fsum256(__m256 v) { float b[8]; _mm256_storeu_ps(b, v); return b[0] + b[7]; }
#define FSUM(v) fsum256(v)
#endif

static double fp32_gmacs(long n, float *sink) {
#define FI(k) FVEC a##k = FSET(0.001f * k);
    R12(FI)
    FVEC b = FSET(0.9999f), c = FSET(1e-5f);
    double t = now();
    for (long i = 0; i < n; i++) {
#define FF(k) a##k = FFMA(a##k, b, c);
        R12(FF)
    }
    double dt = now() - t;
#define FS(k) +FSUM(a##k)
    *sink += 0 R12(FS);
    return 12.0 * FLANES * n / dt / 1e9;
}

#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)
#if defined(__AVX512VNNI__)
#define IVEC __m512i
#define ILANES 16
#define ISET32 _mm512_set1_epi32
#define ISET8 _mm512_set1_epi8
#define IDOT _mm512_dpbusd_epi32
#define ISUM(v) _mm512_reduce_add_epi32(v)
#else
#define IVEC __m256i
#define ILANES 8
#define ISET32 _mm256_set1_epi32
#define ISET8 _mm256_set1_epi8
#define IDOT _mm256_dpbusd_avx_epi32
#define ISUM(v) _mm256_extract_epi32(v, 0)
#endif
static double int8_gmacs(long n, long *sink) {
#define II(k) IVEC q##k = ISET32(k);
    R12(II)
    IVEC u = ISET8(1), v = ISET8(2);
    double t = now();
    for (long i = 0; i < n; i++) {
#define ID(k) q##k = IDOT(q##k, u, v);
        R12(ID)
    }
    double dt = now() - t;
#define IS(k) +ISUM(q##k)
    *sink += 0 R12(IS);
    return 12.0 * ILANES * 4 * n / dt / 1e9;
}
#endif

int main(void) {
    double best_clock = 0, best_fp32 = 0, best_int8 = 0, r;
    float fsink = 0;
    long isink = 0;
    for (int rep = 0; rep < 7; rep++) {
        if ((r = clock_ghz(20000000)) > best_clock) best_clock = r;
        if ((r = fp32_gmacs(4000000, &fsink)) > best_fp32) best_fp32 = r;
#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)
        if ((r = int8_gmacs(4000000, &isink)) > best_int8) best_int8 = r;
#endif
    }
    printf("clock_ghz %.4f\n", best_clock);
    printf("fp32_gmacs %.3f\n", best_fp32);
    printf("fp32_lanes %d\n", FLANES);
#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)
    printf("int8_gmacs %.3f\n", best_int8);
    printf("int8_lanes %d\n", ILANES * 4);
#endif
    printf("sink %g %ld\n", (double)fsink, isink);
    return 0;
}
