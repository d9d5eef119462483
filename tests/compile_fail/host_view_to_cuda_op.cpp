// Host memory handed to an op on another device must not compile: the memory space is in the view's type.
#include <qformer/qformer.hpp>

int main() {
  float x[6] = {}, w[6] = {}, y[4] = {};
  qformer::context<qformer::cpu> ctx;
#ifdef QFORMER_COMPILE_FAIL_CONTROL
  using input_device = qformer::cpu;
#else
  using input_device = qformer::cuda;
#endif
  qformer::view<const float, input_device> xv(x, {2, 3}), wv(w, {2, 3});
  qformer::view<float> yv(y, {2, 2});
  qformer::ops::linear(ctx, xv, wv, {}, yv);
  return 0;
}
