// Adafactor's matrix step as hand-written C: the machine's limit for adafactor.gd's factored
// update, in the style of ../shared/tools/reference/opt.c (gcc -O3 -march=native
// -fno-math-errno -fopenmp, OpenMP over rows, float32 data, float64 sums as gdc keeps them).
// Semantics: torch.optim.Adafactor's _single_tensor_adafactor for a matrix (the golden case
// adafactor-default), as examples/optimizers/adafactor.gd writes it:
//   w = step^beta2_decay; alpha = max(eps2, ||p|| / sqrt(n)) * min(lr, 1/sqrt(step));
//   p *= 1 - lr*wd; row = lerp(row, mean_j g^2, w); col = lerp(col, mean_i g^2, w);
//   u = g * rsqrt(max(row_i * col_j / max(mean(row), eps1), eps1^2));
//   p -= alpha / max(1, ||u|| / (sqrt(n) * d)) * u.
// Three passes over the matrix, the fewest the data dependencies allow: (1) row and column
// sums of g^2 and ||p||^2 (each thread its own column sums, folded after); (2) ||u||^2;
// (3) the update, recomputing u from g rather than storing it. Bytes per element: 8 + 4 + 12.
// Build: gcc -O3 -march=native -fno-math-errno -fopenmp adafactor.c -o adafactor -lm
// Run:   OMP_NUM_THREADS=2 ./adafactor <rows> <cols> <steps>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

// One row of the update, in a function of its own: inside the OpenMP region gcc reloads the
// shared values after every store through p (which might alias them) and leaves it scalar.
// The clamps are selects, not fmaxf, which gcc leaves scalar (as in sophia.c); a NaN passes
// through, as gdc's max propagates it.
static void update_row(size_t cols, float *restrict pi, const float *restrict gi,
                       const float *restrict cv, float ri, float de, float fl, float dc,
                       float sc) {
  for (size_t j = 0; j < cols; j++) {
    float v = ri * cv[j] / de;
    float u = gi[j] / sqrtf(v < fl ? fl : v);
    pi[j] = pi[j] * dc - sc * u;
  }
}

static void adafactor_step(size_t rows, size_t cols, float *restrict p, const float *restrict g,
                           float *restrict row, float *restrict col, double *restrict colsum,
                           int step) {
  const float lr = 1e-2f, beta2_decay = -0.8f, eps1 = 1.1920929e-7f, eps2 = 1e-3f, d = 1.0f,
              wd = 0.0f;
  const double n = (double)rows * (double)cols;
  const float w = powf((float)step, beta2_decay);
  double psq = 0.0;
  int nt = omp_get_max_threads();
  memset(colsum, 0, sizeof(double) * cols * nt);
#pragma omp parallel reduction(+ : psq)
  {
    double *mine = colsum + cols * omp_get_thread_num();
#pragma omp for schedule(static)
    for (size_t i = 0; i < rows; i++) {
      const float *gi = g + i * cols, *pi = p + i * cols;
      double rs = 0.0, ps = 0.0;
#pragma omp simd reduction(+ : rs, ps)
      for (size_t j = 0; j < cols; j++) {
        float gg = gi[j] * gi[j];
        rs += gg;
        ps += pi[j] * pi[j];
        mine[j] += gg;
      }
      row[i] += ((float)(rs / cols) - row[i]) * w;
      psq += ps;
    }
  }
  double rowmean = 0.0;
  for (size_t i = 0; i < rows; i++) rowmean += row[i];
  rowmean /= rows;
  for (size_t j = 0; j < cols; j++) {
    double s = 0.0;
    for (int t = 0; t < nt; t++) s += colsum[cols * t + j];
    col[j] += ((float)(s / rows) - col[j]) * w;
  }
  const float denom = fmaxf((float)rowmean, eps1), floor2 = eps1 * eps1;
  double usq = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : usq)
  for (size_t i = 0; i < rows; i++) {
    const float *gi = g + i * cols;
    const float ri = row[i];
    double us = 0.0;
#pragma omp simd reduction(+ : us)
    for (size_t j = 0; j < cols; j++) {
      float v = ri * col[j] / denom;
      float u = gi[j] / sqrtf(v < floor2 ? floor2 : v);
      us += u * u;
    }
    usq += us;
  }
  const float alpha = fmaxf(eps2, (float)(sqrt(psq) / sqrt(n))) * fminf(lr, 1.0f / sqrtf((float)step));
  const float scale = alpha / fmaxf(1.0f, (float)(sqrt(usq) / (sqrt(n) * d)));
  const float decay = 1.0f - lr * wd;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < rows; i++)
    update_row(cols, p + i * cols, g + i * cols, col, row[i], denom, floor2, decay, scale);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s rows cols steps\n", argv[0]);
    return 1;
  }
  size_t rows = (size_t)atol(argv[1]), cols = (size_t)atol(argv[2]), n = rows * cols;
  int steps = atoi(argv[3]), warm = 3;
  float *p, *g, *row = calloc(rows, 4), *col = calloc(cols, 4);
  double *colsum = malloc(sizeof(double) * cols * omp_get_max_threads());
  if (posix_memalign((void **)&p, 4096, n * 4) || posix_memalign((void **)&g, 4096, n * 4))
    return 1;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    p[i] = 0.01f * (float)(i % 1000) - 5.0f;
    g[i] = 1e-3f * (float)((i * 7) % 997) - 0.5f;
  }
  double *ts = malloc(sizeof(double) * steps);
  for (int s = 0; s < warm + steps; s++) {
    double t0 = now();
    adafactor_step(rows, cols, p, g, row, col, colsum, s + 1);
    double dt = now() - t0;
    if (s >= warm) ts[s - warm] = dt;
  }
  double sum = 0;
  for (int s = 0; s < steps; s++) sum += ts[s];
  double chk = 0;
  for (size_t i = 0; i < n; i += 4099) chk += p[i];
  qsort(ts, steps, sizeof(double), cmpd);
  printf("{\"impl\":\"C adafactor (gcc -O3 -march=native -fno-math-errno)\",\"rows\":%zu,\"cols\":%zu,"
         "\"threads\":%d,\"steps\":%d,\"min_ms\":%.4f,\"med_ms\":%.4f,\"max_ms\":%.4f,\"mean_ms\":%.4f,"
         "\"chk\":%g}\n",
         rows, cols, omp_get_max_threads(), steps, ts[0] * 1e3, ts[steps / 2] * 1e3, ts[steps - 1] * 1e3,
         sum / steps * 1e3, chk);
  return 0;
}
