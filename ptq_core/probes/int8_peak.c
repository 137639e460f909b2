/* The core's clock and the int8 multiply-accumulate rate of one unit, measured: ptq_core/cpu_peak.py compiles it
 * with -DPROBE_<UNIT> and the unit's compiler flags, runs it, and prints "<GHz> <instructions per cycle>".
 *
 * clock: a chain of dependent register-register adds (1 cycle each on every x86 and arm64 core; an add of an
 * immediate can be folded at rename on recent Intel cores, one of a register cannot). rate: independent
 * accumulators, enough to fill every pipe whatever the instruction's latency. Each is timed in thread CPU time
 * (time the scheduler gave to other processes does not count), best of TRIALS interleaved trials.
 * Exit status 3: the kernel refused the AMX tile state (message on stderr). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define TRIALS 9

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#if defined(__x86_64__)
#define ADD "add %1,%0\n\t"
#elif defined(__aarch64__)
#define ADD "add %0,%0,%1\n\t"
#else
#error "the clock chain is written for x86_64 and aarch64"
#endif
#define ADD16 ADD ADD ADD ADD ADD ADD ADD ADD ADD ADD ADD ADD ADD ADD ADD ADD
#define CHAIN_ITERATIONS 2500000L
#define CHAIN_ADDS (16.0 * CHAIN_ITERATIONS)

static long chain_sink;

static double time_chain(void) {
    long x = 0, one = 1;
    double t0 = cpu_seconds();
    for (long i = 0; i < CHAIN_ITERATIONS; i++) __asm__ volatile(ADD16 : "+r"(x) : "r"(one));
    double t = cpu_seconds() - t0;
    chain_sink += x;
    return t;
}

#if defined(PROBE_AVX512_VNNI) || defined(PROBE_AVX_VNNI)
#include <immintrin.h>
#if defined(PROBE_AVX512_VNNI)
#define DP(i) "vpdpbusd %12,%13,%" #i "\n\t" /* EVEX, zmm: 64 u8 x s8 MACs */
#define VEC __m512i
#define SET1 _mm512_set1_epi8
#define REG "v"
#else
#define DP(i) "%{vex%} vpdpbusd %12,%13,%" #i "\n\t" /* VEX (AVX-VNNI), ymm: 32 u8 x s8 MACs */
#define VEC __m256i
#define SET1 _mm256_set1_epi8
#define REG "x"
#endif
#define UNIT_ITERATIONS 4000000L
#define UNIT_INSTRUCTIONS (12.0 * UNIT_ITERATIONS)
static int unit_setup(void) { return 0; }
static double time_unit(void) {
    VEC a = SET1(1), b = SET1(2), c0 = SET1(0);
    VEC c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    double t0 = cpu_seconds();
    for (long i = 0; i < UNIT_ITERATIONS; i++)
        __asm__ volatile(DP(0) DP(1) DP(2) DP(3) DP(4) DP(5) DP(6) DP(7) DP(8) DP(9) DP(10) DP(11)
                         : "+" REG(c0), "+" REG(c1), "+" REG(c2), "+" REG(c3), "+" REG(c4), "+" REG(c5),
                           "+" REG(c6), "+" REG(c7), "+" REG(c8), "+" REG(c9), "+" REG(c10), "+" REG(c11)
                         : REG(a), REG(b));
    return cpu_seconds() - t0;
}
static void unit_teardown(void) {}

#elif defined(PROBE_AMX_INT8)
#include <immintrin.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
/* TDPBUSD: a 16x16 int32 tile += a 16x64 u8 tile times a 64x16 s8 tile (stored 16 rows of 64 bytes) = 16,384
 * MACs. Tiles 0-3 accumulate, A in tiles 4-5, B in 6-7: four independent chains. */
#define UNIT_ITERATIONS 300000L
#define UNIT_INSTRUCTIONS (4.0 * UNIT_ITERATIONS)
struct tile_config {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
};
static uint8_t operands[1024] __attribute__((aligned(64)));
static int unit_setup(void) {
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) {
        fprintf(stderr, "arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): %s\n", strerror(errno));
        return 3;
    }
    struct tile_config config __attribute__((aligned(64)));
    memset(&config, 0, sizeof config);
    config.palette_id = 1;
    for (int t = 0; t < 8; t++) {
        config.rows[t] = 16;
        config.bytes_per_row[t] = 64;
    }
    _tile_loadconfig(&config);
    memset(operands, 1, sizeof operands);
    return 0;
}
static double time_unit(void) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, operands, 64);
    _tile_loadd(5, operands, 64);
    _tile_loadd(6, operands, 64);
    _tile_loadd(7, operands, 64);
    double t0 = cpu_seconds();
    for (long i = 0; i < UNIT_ITERATIONS; i++) {
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        _tile_dpbusd(2, 5, 6);
        _tile_dpbusd(3, 5, 7);
    }
    return cpu_seconds() - t0;
}
static void unit_teardown(void) { _tile_release(); }

#elif defined(PROBE_SDOT)
#define DP(i) "sdot %" #i ".4s,%12.16b,%13.16b\n\t" /* 128-bit: 16 s8 x s8 MACs */
#define UNIT_ITERATIONS 4000000L
#define UNIT_INSTRUCTIONS (12.0 * UNIT_ITERATIONS)
#include <arm_neon.h>
static int unit_setup(void) { return 0; }
static double time_unit(void) {
    int8x16_t a = vdupq_n_s8(1), b = vdupq_n_s8(2);
    int32x4_t c0 = vdupq_n_s32(0);
    int32x4_t c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    double t0 = cpu_seconds();
    for (long i = 0; i < UNIT_ITERATIONS; i++)
        __asm__ volatile(DP(0) DP(1) DP(2) DP(3) DP(4) DP(5) DP(6) DP(7) DP(8) DP(9) DP(10) DP(11)
                         : "+w"(c0), "+w"(c1), "+w"(c2), "+w"(c3), "+w"(c4), "+w"(c5), "+w"(c6), "+w"(c7),
                           "+w"(c8), "+w"(c9), "+w"(c10), "+w"(c11)
                         : "w"(a), "w"(b));
    return cpu_seconds() - t0;
}
static void unit_teardown(void) {}

#else
#error "define the unit to probe: PROBE_AMX_INT8, PROBE_AVX512_VNNI, PROBE_AVX_VNNI or PROBE_SDOT"
#endif

int main(void) {
    int status = unit_setup();
    if (status != 0) return status;
    time_chain(); /* warm-up: the core leaves its idle clock */
    double chain = 1e30, unit = 1e30;
    for (int i = 0; i < TRIALS; i++) {
        double c = time_chain(), u = time_unit();
        if (c < chain) chain = c;
        if (u < unit) unit = u;
    }
    unit_teardown();
    double hz = CHAIN_ADDS / chain;
    printf("%.4f %.4f\n", hz / 1e9, UNIT_INSTRUCTIONS / unit / hz);
    return 0;
}
