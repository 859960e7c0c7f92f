// Sophia-G's step as a hand-fused C loop: the machine's limit for sophia_g.gd's step, in the
// style of ../shared/tools/reference/opt.c (gcc -O3 -march=native -fno-math-errno -fopenmp,
// one OpenMP-parallel simd pass, float32). Semantics: Liuhong99/Sophia SophiaG (the golden
// case sophia_g-default): on a refresh step hess = b2*hess + (1-b2)*h*h first; then
// p *= 1 - lr*wd; m = b1*m + (1-b1)*g; p -= lr * sign(m) * min(|m| / (rho*bs*hess + 1e-15), 1).
// Bytes per element: a plain step reads p, g, m, hess and writes p, m (24 B); a refresh step
// also reads h and writes hess (32 B).
// The clamp is a select, not fminf: gcc leaves a loop with fminf scalar (3.5x slower here);
// both give 1 for a NaN quotient.
// Build: gcc -O3 -march=native -fno-math-errno -fopenmp sophia.c -o sophia -lm
// Run:   OMP_NUM_THREADS=2 ./sophia <log2 N> <steps> <refresh every, 0: never>
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

static void sophia_step(size_t n, float *restrict p, const float *restrict g, float *restrict m,
                        float *restrict hess, const float *restrict h, float lr, float b1,
                        float b2, float rho, float wd, float bs) {
  const float decay = 1.0f - lr * wd;
  const float scale = rho * bs;
  if (h) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
      float hi = h[i];
      float e = b2 * hess[i] + (1.0f - b2) * hi * hi;
      hess[i] = e;
      float mi = b1 * m[i] + (1.0f - b1) * g[i];
      m[i] = mi;
      float q = fabsf(mi) / (scale * e + 1e-15f);
      float r = q < 1.0f ? q : 1.0f;
      float s = (mi > 0.0f) - (mi < 0.0f);
      p[i] = p[i] * decay - lr * s * r;
    }
  } else {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
      float mi = b1 * m[i] + (1.0f - b1) * g[i];
      m[i] = mi;
      float q = fabsf(mi) / (scale * hess[i] + 1e-15f);
      float r = q < 1.0f ? q : 1.0f;
      float s = (mi > 0.0f) - (mi < 0.0f);
      p[i] = p[i] * decay - lr * s * r;
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s log2N steps refresh_every\n", argv[0]);
    return 1;
  }
  size_t n = (size_t)1 << atoi(argv[1]);
  int steps = atoi(argv[2]), every = atoi(argv[3]), warm = 5;
  float *p, *g, *m, *e, *h;
  if (posix_memalign((void **)&p, 4096, n * 4) || posix_memalign((void **)&g, 4096, n * 4) ||
      posix_memalign((void **)&m, 4096, n * 4) || posix_memalign((void **)&e, 4096, n * 4) ||
      posix_memalign((void **)&h, 4096, n * 4))
    return 1;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    p[i] = 0.01f * (float)(i % 1000);
    g[i] = 1e-3f * (float)((i * 7) % 997) - 0.5f;
    h[i] = 1e-3f * (float)((i * 13) % 991) - 0.5f;
    m[i] = 0.0f;
    e[i] = 0.0f;
  }
  double *ts = malloc(sizeof(double) * steps);
  for (int s = 0; s < warm + steps; s++) {
    const float *hs = (every > 0 && s % every == 0) ? h : NULL;
    double t0 = now();
    sophia_step(n, p, g, m, e, hs, 1e-4f, 0.965f, 0.99f, 0.04f, 0.1f, 5120.0f);
    double d = now() - t0;
    if (s >= warm) ts[s - warm] = d;
  }
  double sum = 0;
  for (int s = 0; s < steps; s++) sum += ts[s];
  double chk = 0;
  for (size_t i = 0; i < n; i += 4099) chk += p[i];
  qsort(ts, steps, sizeof(double), cmpd);
  printf("{\"impl\":\"C fused sophia (gcc -O3 -march=native -fno-math-errno)\",\"n\":%zu,\"threads\":%d,"
         "\"steps\":%d,\"refresh_every\":%d,\"min_ms\":%.4f,\"med_ms\":%.4f,\"max_ms\":%.4f,\"mean_ms\":%.4f,\"chk\":%g}\n",
         n, omp_get_max_threads(), steps, every, ts[0] * 1e3, ts[steps / 2] * 1e3, ts[steps - 1] * 1e3,
         sum / steps * 1e3, chk);
  return 0;
}
