// A read-only view must not become a writable one.
#include <qformer/core/tensor.hpp>

int main() {
  float data[4] = {};
  qformer::view<const float> read_only(data, {2, 2});
#ifdef QFORMER_COMPILE_FAIL_CONTROL
  qformer::view<const float> writable = read_only;
#else
  qformer::view<float> writable = read_only;
#endif
  return static_cast<int>(writable.numel()) - 4;
}
