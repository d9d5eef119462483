// The CUDA backend's linear (cuBLASLt) against the scalar reference, per dtype, with and without bias and with
// a strided input. Exits 77 (ctest: skipped) when no GPU is present.
#include <qformer/cuda.hpp>
#include <qformer/ops/reference/reference.hpp>

#include <cmath>
#include <cstdio>
#include <random>

using namespace qformer;

namespace {

template <class T>
tensor<T> random_host(const shape& s, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  tensor<T> t(s);
  for (index_t i = 0; i < t.numel(); ++i) t.data()[i] = from_float<T>(u(rng));
  return t;
}

template <class T>
double max_relative_diff(const tensor<T>& a, const tensor<T>& b) {
  double diff = 0, ref = 0;
  for (index_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::abs(double(to_float(a.data()[i])) - to_float(b.data()[i])));
    ref = std::max(ref, std::abs(double(to_float(b.data()[i]))));
  }
  return diff / std::max(1.0, ref);
}

/// Returns the number of failed checks.
template <class T>
int check_linear(const char* name, double bound) {
  int failures = 0;
  context<cuda> ctx;
  const index_t N = 33, in = 72, out = 40;  // non-square; in and out multiples of 8 (cuBLASLt alignment for 16-bit)
  const tensor<T> x = random_host<T>({N, 2 * in}, 1), w = random_host<T>({out, in}, 2), b = random_host<T>({out}, 3);
  const tensor<T, cuda> dx = to_device<T, cuda>(x), dw = to_device<T, cuda>(w), db = to_device<T, cuda>(b);
  for (bool with_bias : {true, false}) {
    tensor<T> want({N, out});
    reference::linear<T>(x.get().columns(in, in), w.get(), with_bias ? b.get() : view<const T>(), want.mut());
    tensor<T, cuda> dy({N, out});
    ops::linear<T, cuda>(ctx, dx.get().columns(in, in), dw.get(), with_bias ? db.get() : view<const T, cuda>(), dy.mut());
    ctx.backend().synchronize();
    const double d = max_relative_diff(to_host(dy), want);
    const bool ok = d <= bound;
    failures += !ok;
    std::printf("%s linear %s bias: max relative diff %.3g (bound %.1g) %s\n", name, with_bias ? "with" : "without", d,
                bound, ok ? "ok" : "FAILED");
  }
  return failures;
}

}  // namespace

int main() {
  if (!cuda_available()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  try {
    int failures = 0;
    failures += check_linear<float>("f32", 1e-3);  // cuBLAS may use TF32-free fp32 or split kernels: loose bound
    failures += check_linear<fp16>("f16", 4e-3);
    failures += check_linear<bf16>("bf16", 3e-2);
    std::printf("%d passed, %d failed\n", 6 - failures, failures);
    return failures == 0 ? 0 : 1;
  } catch (const qformer::error& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
