/* The core's clock and int8 multiply-accumulate rate, measured: ptq_core/cpu_peak.py compiles and runs it.
 * clock: a chain of dependent 1-cycle integer adds; rate: 12 independent VPDPBUSD zmm accumulators (64 u8 x s8
 * MACs each), enough to fill every pipe whatever its latency. Prints "<GHz> <VPDPBUSD per cycle>". */
#include <stdio.h>
#include <time.h>
#include <immintrin.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

#define ADD8 "add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\t"
#define DP(i) "vpdpbusd %12,%13,%" #i "\n\t"

int main(void) {
    long n = 200000000L, x = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) __asm__ volatile(ADD8 : "+r"(x));
    double ghz = 8.0 * n / (now() - t0) / 1e9;
    __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2), c0 = _mm512_setzero_si512();
    __m512i c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    long m = 50000000L;
    t0 = now();
    for (long i = 0; i < m; i++)
        __asm__ volatile(DP(0) DP(1) DP(2) DP(3) DP(4) DP(5) DP(6) DP(7) DP(8) DP(9) DP(10) DP(11)
                         : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), "+v"(c7),
                           "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11)
                         : "v"(a), "v"(b));
    double per_cycle = 12.0 * m / (now() - t0) / (ghz * 1e9);
    printf("%.3f %.3f\n", ghz, per_cycle);
    return (int)(x & 1) * 0 + (_mm512_reduce_add_epi32(c0) == 0);
}
