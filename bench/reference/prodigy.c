// Prodigy's step as hand-fused C loops: the machine's limit for prodigy.gd's step, in the
// style of ../shared/tools/reference/opt.c (gcc -O3 -march=native -fno-math-errno -fopenmp,
// OpenMP-parallel simd passes, float32 state, sums in double). Semantics: optax 0.2.8's
// contrib.prodigy (the golden case prodigy-optax), beta3 = sqrt(beta2): one pass over every
// tensor updates exp_avg, exp_avg_sq and grad_sum and sums <g, p0 - p> and |grad_sum| (they
// decide d, which the second pass reads: no single pass can do both), then one pass steps p.
// Bytes per element: pass 1 reads p, g, exp_avg, exp_avg_sq, grad_sum, p0 and writes the
// three moments (36 B); pass 2 reads p, exp_avg, exp_avg_sq and writes p (16 B): 52 B.
// Build: gcc -O3 -march=native -fno-math-errno -fopenmp prodigy.c -o prodigy -lm
// Run:   OMP_NUM_THREADS=2 ./prodigy <log2 N> <steps>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct {
  float d, numerator;
} Globals;

static void prodigy_step(size_t n, float *restrict p, const float *restrict g, float *restrict ea,
                         float *restrict eas, float *restrict gs, const float *restrict p0,
                         Globals *gl, int t, float lr, float b1, float b2, float eps, float d0,
                         float wd) {
  const float b3 = sqrtf(b2);
  const float d = gl->d;
  const float dlr = d * lr * sqrtf(1.0f - powf(b2, (float)t)) / (1.0f - powf(b1, (float)t));
  double num = 0.0, den = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : num, den)
  for (size_t i = 0; i < n; i++) {
    float gi = g[i], dg = d * gi;
    ea[i] = b1 * ea[i] + (1.0f - b1) * dg;
    eas[i] = b2 * eas[i] + (1.0f - b2) * dg * dg;
    float s = b3 * gs[i] + dlr * dg / d0;
    gs[i] = s;
    num += (double)(gi * (p0[i] - p[i]));
    den += (double)fabsf(s);
  }
  float numerator = b3 * gl->numerator + d / d0 * dlr * (float)num;
  float d_new = d;
  if (den > 0.0) d_new = fmaxf(d, numerator / (float)den);
  const float decay = wd * dlr, eps_d = d_new * eps;
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; i++) p[i] = p[i] - decay * p[i] - dlr * ea[i] / (sqrtf(eas[i]) + eps_d);
  gl->d = d_new;
  gl->numerator = numerator;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s log2N steps\n", argv[0]);
    return 1;
  }
  size_t n = (size_t)1 << atoi(argv[1]);
  int steps = atoi(argv[2]);
  int warm = 5;
  float *a[6];
  for (int k = 0; k < 6; k++)
    if (posix_memalign((void **)&a[k], 4096, n * 4)) return 1;
  float *p = a[0], *g = a[1], *ea = a[2], *eas = a[3], *gs = a[4], *p0 = a[5];
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    p[i] = 0.01f * (float)(i % 1000);
    p0[i] = p[i];
    g[i] = 1e-3f * (float)((i * 7) % 997) - 0.5f;
    ea[i] = eas[i] = gs[i] = 0.0f;
  }
  Globals gl = {1e-6f, 0.0f};
  double *ts = malloc(sizeof(double) * steps);
  for (int s = 0; s < warm + steps; s++) {
    double t0 = now();
    prodigy_step(n, p, g, ea, eas, gs, p0, &gl, s + 1, 1.0f, 0.9f, 0.999f, 1e-8f, 1e-6f, 1e-2f);
    double dt = now() - t0;
    if (s >= warm) ts[s - warm] = dt;
  }
  double chk = 0;
  for (size_t i = 0; i < n; i += 4099) chk += p[i];
  qsort(ts, steps, sizeof(double), cmpd);
  printf("{\"impl\":\"C fused two-pass (gcc -O3 -march=native -fno-math-errno)\",\"opt\":\"prodigy\",\"n\":%zu,"
         "\"threads\":%d,\"steps\":%d,\"min_ms\":%.4f,\"med_ms\":%.4f,\"max_ms\":%.4f,\"bytes_per_param\":52,"
         "\"d\":%g,\"chk\":%g}\n",
         n, omp_get_max_threads(), steps, ts[0] * 1e3, ts[steps / 2] * 1e3, ts[steps - 1] * 1e3, gl.d, chk);
  return 0;
}
