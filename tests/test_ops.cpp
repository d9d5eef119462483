// Core types and every op of the CPU backend against the scalar reference ops (ops/reference), per dtype.

#include "test_util.hpp"

#include <qformer/backends/cpu/backend.hpp>
#include <qformer/backends/cpu/gemm_int8.hpp>
#include <qformer/io/checkpoint.hpp>
#include <qformer/layers/linear.hpp>
#include <qformer/ops/ops.hpp>
#include <qformer/ops/reference/reference.hpp>

using namespace qformer;

namespace {

/// Bound on max|cpu - reference| / max(1, max|reference|) per dtype: fp32 summation order only; bf16 / fp16
/// one rounding of the result (and, for ops that round intermediates, a few).
template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, float>) return 2e-5;
  else if constexpr (std::is_same_v<T, fp16>) return 4e-3;
  else return 3e-2;
}

}  // namespace

TEST_CASE("shape and view: slicing, columns, reshape, const conversion") {
  float data[2 * 3 * 4];
  for (int i = 0; i < 24; ++i) data[i] = float(i);
  view<float> v(data, {2, 3, 4});
  CHECK(v.rows() == 6);
  CHECK(v.cols() == 4);
  CHECK(v[1].shape() == shape{3, 4});
  CHECK(v[1].row(0)[0] == 12.0f);
  CHECK(v[1].slice(1, 2).row(0)[0] == 16.0f);
  view<float> c = v.columns(1, 2);
  CHECK(c.shape() == shape{2, 3, 2});
  CHECK(c.row_stride() == 4);
  CHECK(c.row(5)[1] == 22.0f);
  CHECK_FALSE(c.contiguous());
  CHECK_THROWS_AS(c.reshape({12}), shape_error);
  CHECK(v.reshape({6, 4}).row(5)[3] == 23.0f);
  view<const float> read_only = v;
  CHECK(read_only.data() == v.data());
  CHECK_THROWS_AS(v.columns(3, 2), shape_error);
  CHECK_THROWS_AS(v[2], shape_error);
  CHECK_THROWS_AS((shape{1, 2, 3, 4, 5}), shape_error);
  CHECK_THROWS_AS((shape{-1}), shape_error);
}

TEST_CASE("workspace arena: scopes are LIFO and a repeated pass allocates nothing") {
  context<cpu> ctx;
  auto pass = [&] {
    typename context<cpu>::scope outer(ctx);
    view<float> a = ctx.alloc<float>({1000, 1000});  // 4 MB: more than the first block
    std::fill_n(a.data(), a.numel(), 1.0f);
    {
      typename context<cpu>::scope inner(ctx);
      view<float> b = ctx.alloc<float>({300, 1000});
      std::fill_n(b.data(), b.numel(), 2.0f);
    }
    view<float> c = ctx.alloc<float>({500, 1000});  // reuses b's memory, never a's
    std::fill_n(c.data(), c.numel(), 3.0f);
    CHECK(std::all_of(a.data(), a.data() + a.numel(), [](float x) { return x == 1.0f; }));
  };
  pass();
  const std::size_t after_first = ctx.arena().device_allocations();
  pass();
  pass();
  CHECK(ctx.arena().device_allocations() == after_first);
}

TEST_CASE_TEMPLATE("linear matches the reference, including strided input and no bias", T, float, fp16, bf16) {
  context<cpu> ctx;
  const index_t N = 7, in = 37, out = 19;  // non-square, not multiples of the SIMD width
  tensor<T> x = test::random_tensor<T>({N, 2 * in}, 1), w = test::random_tensor<T>({out, in}, 2),
            b = test::random_tensor<T>({out}, 3);
  view<const T> xs = x.get().columns(5, in);  // row stride 2*in
  for (bool with_bias : {true, false}) {
    tensor<T> want({N, out}), got({N, out});
    view<const T> bias = with_bias ? b.get() : view<const T>();
    reference::linear<T>(xs, w.get(), bias, want.mut());
    ops::linear<T, cpu>(ctx, xs, w.get(), bias, got.mut());
    CHECK(test::relative_max_diff(got.get(), want.get()) <= tolerance<T>());
  }
  tensor<T> wrong({N, out + 1});
  CHECK_THROWS_AS((ops::linear<T, cpu>(ctx, xs, w.get(), b.get(), wrong.mut())), shape_error);
}

TEST_CASE("linear_fused is linear, then the activation, then the residual add; its output may overlap neither input") {
  context<cpu> ctx;
  const index_t n = 3, in = 24, out = 10;
  const tensor<float> x = test::random_tensor<float>({n, in}, 1), w = test::random_tensor<float>({out, in}, 2),
                      b = test::random_tensor<float>({out}, 3), residual = test::random_tensor<float>({n, out}, 4);
  for (const std::optional<activation> act : {std::optional<activation>(), std::optional(activation::relu),
                                              std::optional(activation::gelu_erf), std::optional(activation::gelu_tanh)}) {
    CAPTURE(act ? int(*act) : -1);
    tensor<float> want({n, out}), got({n, out});
    ops::linear<float, cpu>(ctx, x.get(), w.get(), b.get(), want.mut());
    if (act) ops::activate<float, cpu>(ctx, *act, want.get(), want.mut());
    ops::add<float, cpu>(ctx, want.get(), residual.get(), want.mut());
    ops::linear_fused<float, cpu>(ctx, x.get(), w.get(), b.get(), act, residual.get(), got.mut());
    CHECK(test::relative_max_diff(got.get(), want.get()) == 0.0);
  }
  tensor<float> y = test::random_tensor<float>({n, out}, 5);
  auto residual_is_output = [&] { ops::linear_fused<float, cpu>(ctx, x.get(), w.get(), b.get(), std::nullopt, y.get(), y.mut()); };
  CHECK_THROWS_AS(residual_is_output(), shape_error);
  tensor<float> wide({n, in + out});
  const view<float> left = wide.mut().columns(0, in), right = wide.mut().columns(in, out);  // interleaved rows
  auto output_among_inputs = [&] { ops::linear_fused<float, cpu>(ctx, left, w.get(), b.get(), std::nullopt, residual.get(), right); };
  CHECK_THROWS_AS(output_among_inputs(), shape_error);
}

TEST_CASE_TEMPLATE("linear: the AVX-512 kernels and the portable path match the reference at every edge", T, float, bf16) {
  // Rows 1-8 take the GEMV kernels (bf16 on AMX: 1-4), more the blocked GEMM (panels of 32 and a last one of 16 or
  // 32, micro-tiles of 12/8/4/2/1 rows of w, or for bf16 on AMX 32 rows then those); depths past one block (256
  // fp32, 2048 bf16, 4096 AMX) accumulate across blocks; odd depths leave bf16 a half pair, depths not a multiple of
  // 32 an AMX tail; more than 128 rows span several AMX row blocks, more than 384 several fp32 ones; more than 32
  // n-tiles a thread (830, 790 outputs) several fp32 n-blocks; strided x and y. GEMVs of 2-8 rows over rows of w
  // longer than two pieces of 2560 bytes run the depth in pieces (gemv_depth_piece: 2-18 of them here, the last
  // one shorter, with a tail under one vector), in groups of 96 rows of w a thread, plus N mod 3 rows alone.
  struct size3 {
    index_t rows, in, out;
  };
  const size3 sizes[] = {{1, 1, 1},      {1, 37, 29},     {2, 64, 13},    {3, 17, 40},    {4, 100, 9},   {5, 33, 12},
                         {6, 40, 17},    {7, 300, 33},    {8, 513, 23},   {16, 31, 25},   {17, 8, 27},   {31, 65, 11},
                         {33, 70, 50},   {47, 129, 37},   {64, 2100, 14}, {70, 1030, 3},  {257, 40, 29}, {300, 2051, 13},
                         {9, 4099, 21},  {5, 64, 32},     {40, 4133, 64}, {150, 101, 96}, {257, 1408, 45},
                         {400, 300, 830}, {33, 520, 790}, {66, 300, 50},  {100, 600, 40},
                         {8, 2600, 230}, {5, 2600, 101}, {2, 12000, 40},  {3, 1300, 200}, {7, 5000, 97}};
  context<cpu> ctx;
  if (!host_cpu().has_avx512()) MESSAGE("this CPU has no AVX-512: every run takes the portable path");
  if (std::is_same_v<T, bf16> && !host_cpu().has_amx_bf16()) MESSAGE("no AMX here: automatic is the avx512 path");
  for (const size3& s : sizes) {
    CAPTURE(s.rows);
    CAPTURE(s.in);
    CAPTURE(s.out);
    tensor<T> x = test::random_tensor<T>({s.rows, s.in + 3}, 11), w = test::random_tensor<T>({s.out, s.in}, 12),
              b = test::random_tensor<T>({s.out}, 13);
    view<const T> xs = x.get().columns(2, s.in);
    tensor<T> want({s.rows, s.out});
    reference::linear<T>(xs, w.get(), b.get(), want.mut());
    for (cpu_kernels choice : {cpu_kernels::automatic, cpu_kernels::avx512, cpu_kernels::portable}) {
      set_cpu_kernels(choice);
      CAPTURE(static_cast<int>(choice));
      tensor<T> got({s.rows, s.out + 5});
      view<T> ys = got.mut().columns(1, s.out);
      for (index_t i = 0; i < got.numel(); ++i) got.data()[i] = from_float<T>(7.0f);
      ops::linear<T, cpu>(ctx, xs, w.get(), b.get(), ys);
      CHECK(test::relative_max_diff(view<const T>(ys), want.get()) <= tolerance<T>() * std::max(1.0, std::sqrt(s.in / 64.0)));
      bool guards_kept = true;  // the columns beside y's (masked stores of partial blocks) are not written
      for (index_t r = 0; r < s.rows; ++r)
        for (index_t c : {index_t{0}, s.out + 1, s.out + 2, s.out + 3, s.out + 4})
          guards_kept = guards_kept && to_float(got.get().row(r)[c]) == 7.0f;
      CHECK(guards_kept);
      tensor<T> nobias({s.rows, s.out}), want_nobias({s.rows, s.out});
      reference::linear<T>(xs, w.get(), view<const T>(), want_nobias.mut());
      ops::linear<T, cpu>(ctx, xs, w.get(), view<const T>(), nobias.mut());
      CHECK(test::relative_max_diff(nobias.get(), want_nobias.get()) <= tolerance<T>() * std::max(1.0, std::sqrt(s.in / 64.0)));
    }
    set_cpu_kernels(cpu_kernels::automatic);
  }
}

TEST_CASE_TEMPLATE("Linear stores rows a multiple of 2 KiB one cache line apart, and computes the same", T, float, bf16) {
  // 512 fp32 / 1024 bf16 elements are 2 KiB rows: padded (detail::weight_row_stride); 300 are not. The weight
  // arrives through set(), load() and load_stacked() (two parts, fused by rows), each spreading rows in place.
  const random_weights source(7, 0.5f);
  const weight_scope root(source);
  for (const index_t in : {index_t{300}, index_t{2048 / sizeof(T)}}) {
    CAPTURE(in);
    const index_t N = 40, out = 30;
    const bool padded = in * static_cast<index_t>(sizeof(T)) % 2048 == 0;
    tensor<T> x = test::random_tensor<T>({N, in}, 4);
    tensor<T> w({out, in}), b({out});
    (root / "a").load_into<T>("weight", {out / 2, in}, w.data());
    (root / "b").load_into<T>("weight", {out / 2, in}, w.data() + out / 2 * in);
    (root / "a").load_into<T>("bias", {out / 2}, b.data());
    (root / "b").load_into<T>("bias", {out / 2}, b.data() + out / 2);
    tensor<T> want({N, out}), got({N, out});
    reference::linear<T>(x.get(), w.get(), b.get(), want.mut());
    Linear<T> by_set(in, out), stacked(in, out), single(in, out / 2);
    by_set.set(std::move(w), std::move(b));
    stacked.load_stacked({root / "a", root / "b"});
    single.load(root / "a");
    context<cpu> ctx;
    for (Linear<T>* layer : {&by_set, &stacked, &single}) {
      const index_t outputs = layer->out_features();
      CHECK(layer->weight().cols() == in);
      CHECK(layer->weight().row_stride() == (padded ? in + 64 / index_t{sizeof(T)} : in));
      view<T> y = got.mut().columns(0, outputs);
      layer->forward(ctx, x.get(), y);
      CHECK(test::relative_max_diff(view<const T>(y), want.get().columns(0, outputs)) <= tolerance<T>() * std::sqrt(in / 64.0));
      layer->quantize_int8();  // quantises the rows, not the padding
      layer->forward(ctx, x.get(), y);
      CHECK(test::relative_max_diff(view<const T>(y), want.get().columns(0, outputs)) <= 0.03);
    }
  }
}

TEST_CASE_TEMPLATE("linear_int8: AMX, VNNI and portable give the same numbers, within the quantisation bound of fp32", T, float, bf16) {
  // The integer dot products are exact on every path and all dequantise alike, so the three agree to the bit.
  // VNNI (QFORMER_CPU_KERNELS=avx512): rows 1-8 take the GEMV (64 k per load), more the blocked GEMM (12-row
  // micro-tiles, panels of 32 and 16, several row blocks past 128). AMX (automatic, where the CPU has the tiles):
  // the GEMV up to 4 rows, then amx::gemm (n-tiles of 32 with short ones past N mod 32, panels of 32 and 16,
  // depth blocks of 512 with sums kept between them past two panels, row blocks past 320); depths around the
  // 64-element padding; GEMVs over rows of more than two pieces of 2560 bytes in pieces (5248 bytes: 2, 9024: 3),
  // in groups of 96 rows of w a thread plus N mod 3 rows alone. The error of symmetric 8-bit rounding of both
  // operands is at most (max|x| sum|w| + max|w| sum|x|) / 254 per output: on uniform data of these depths well
  // under 2 % of the largest output; the bound checked is 3 %.
  struct size3 {
    index_t rows, in, out;
  };
  const size3 sizes[] = {{1, 1, 1}, {1, 63, 29}, {2, 64, 13}, {3, 65, 40}, {4, 200, 9}, {5, 128, 12}, {6, 1000, 70}, {7, 129, 21},
                         {8, 64, 19}, {8, 2560, 31}, {9, 100, 30}, {33, 70, 50}, {150, 129, 37}, {40, 1000, 64},
                         {100, 1100, 70}, {700, 200, 33}, {8, 5200, 230}, {4, 9000, 101}, {2, 5150, 50}};
  context<cpu> ctx;
  for (const size3& s : sizes) {
    CAPTURE(s.rows);
    CAPTURE(s.in);
    CAPTURE(s.out);
    tensor<T> x = test::random_tensor<T>({s.rows, s.in}, 21), w = test::random_tensor<T>({s.out, s.in}, 22),
              b = test::random_tensor<T>({s.out}, 23);
    const int8_weights q = int8_weights::quantize<T>(w.get());
    CHECK(q.stride % 64 == 0);
    set_cpu_kernels(cpu_kernels::portable);  // the scalar quantiser: the same bytes, scales and offsets
    const int8_weights scalar = int8_weights::quantize<T>(w.get());
    set_cpu_kernels(cpu_kernels::automatic);
    CHECK(scalar.values == q.values);
    CHECK(scalar.scale == q.scale);
    CHECK(scalar.offset == q.offset);
    tensor<T> want({s.rows, s.out});
    reference::linear<T>(x.get(), w.get(), b.get(), want.mut());
    tensor<T> fast({s.rows, s.out}), vnni({s.rows, s.out}), portable({s.rows, s.out});
    cpu_detail::linear_int8<T>(ctx, x.get(), q, b.data(), fast.mut());
    set_cpu_kernels(cpu_kernels::avx512);
    cpu_detail::linear_int8<T>(ctx, x.get(), q, b.data(), vnni.mut());
    set_cpu_kernels(cpu_kernels::portable);
    cpu_detail::linear_int8<T>(ctx, x.get(), q, b.data(), portable.mut());
    set_cpu_kernels(cpu_kernels::automatic);
    CHECK(test::relative_max_diff(fast.get(), portable.get()) == 0.0);
    CHECK(test::relative_max_diff(vnni.get(), portable.get()) == 0.0);
    CHECK(test::relative_max_diff(fast.get(), want.get()) <= 3e-2);
  }
  tensor<T> x({2, 5}), wrong({2, 6}), zero_w({4, 6});
  std::fill_n(zero_w.data(), zero_w.numel(), T(0.0f));
  CHECK_THROWS_AS(cpu_detail::linear_int8<T>(ctx, x.get(), int8_weights::quantize<T>(zero_w.get()), nullptr, wrong.mut()),
                  shape_error);
  const int8_weights zeros = int8_weights::quantize<T>(zero_w.get());  // zero rows: scale 1, all zero
  CHECK(std::all_of(zeros.scale.begin(), zeros.scale.end(), [](float v) { return v == 1.0f; }));
  CHECK(std::all_of(zeros.values.begin(), zeros.values.end(), [](std::int8_t v) { return v == 0; }));
  // A weight that is not finite is named by its row (it used to be skipped by the max and cast from NaN), on both paths.
  for (const cpu_kernels kernels : {cpu_kernels::automatic, cpu_kernels::portable}) {
    for (const float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
      tensor<T> w = test::random_tensor<T>({300, 70}, 24);
      w.data()[211 * 70 + 69] = T(bad);
      w.data()[250 * 70 + 3] = T(bad);
      set_cpu_kernels(kernels);
      CHECK_THROWS_WITH_AS(int8_weights::quantize<T>(w.get()), doctest::Contains("weight row 211 is not finite"), error);
      set_cpu_kernels(cpu_kernels::automatic);
    }
  }
}

#ifdef QFORMER_HAVE_AVX512_KERNELS
TEST_CASE("gemv_depth_piece: one piece for one row of x or short rows, else equal pieces of at least 2560 bytes") {
  using cpu_detail::avx512::gemv_depth_piece;
  CHECK(gemv_depth_piece<1>(10240, 2) == 10240);  // one row of x: one sequential stream
  CHECK(gemv_depth_piece<8>(2559, 2) == 2559);    // under two pieces
  CHECK(gemv_depth_piece<8>(2560, 2) == 1280);    // bf16 OPT-2.7b: x rows of 2560 B, 20 KiB for 8 rows
  CHECK(gemv_depth_piece<8>(10240, 2) == 1280);
  CHECK(gemv_depth_piece<8>(2560, 4) == 640);
  CHECK(gemv_depth_piece<8>(2560, 1) == 2560);    // int8: 2560 bytes already
  CHECK(gemv_depth_piece<4>(10240, 1) == 2560);
  for (const index_t K : {index_t{2600}, index_t{5000}, index_t{12000}})
    for (const index_t bytes : {index_t{1}, index_t{2}, index_t{4}}) {
      CAPTURE(K);
      CAPTURE(bytes);
      const index_t align = 64 / bytes, piece = gemv_depth_piece<8>(K, bytes);
      const index_t pieces = (K + piece - 1) / piece;
      CHECK(piece * bytes >= 2560);
      CHECK((piece == K || piece % align == 0));
      CHECK(K - (pieces - 1) * piece > 0);  // no empty last piece
      CHECK(K - (pieces - 1) * piece >= piece - pieces * align);  // nearly equal pieces
    }
}
#endif

TEST_CASE("AVX-512 row kernels: GELU, softmax and bf16 conversions against the scalar definitions") {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (!host_cpu().has_avx512_bf16()) {
    MESSAGE("no AVX-512 BF16 here: the row kernels are not used");
    return;
  }
  // x from -12 to 12 (erf saturates, exp underflows in the tails), lengths around the 16-lane tail masks.
  for (index_t n : {1, 15, 16, 17, 100, 1031}) {
    CAPTURE(n);
    std::vector<float> x(static_cast<std::size_t>(n)), y(x.size()), s(x.size());
    for (index_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = -12.0f + 24.0f * float(i) / float(std::max<index_t>(1, n - 1));
    cpu_detail::avx512::gelu_erf_row(x.data(), n, y.data());
    double worst = 0;
    for (index_t i = 0; i < n; ++i) {
      const double v = x[static_cast<std::size_t>(i)], want = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
      worst = std::max(worst, std::abs(y[static_cast<std::size_t>(i)] - want) / std::max(1.0, std::abs(want)));
    }
    CHECK(worst <= 1e-6);
    s = x;
    cpu_detail::avx512::softmax_row(s.data(), n);
    double total = 0;
    for (float v : x) total += std::exp(double(v) - 12.0);
    worst = 0;
    for (index_t i = 0; i < n; ++i)
      worst = std::max(worst, std::abs(s[static_cast<std::size_t>(i)] - std::exp(double(x[static_cast<std::size_t>(i)]) - 12.0) / total));
    CHECK(worst <= 1e-6);
    std::vector<bf16> narrow(x.size()), scalar(x.size());
    cpu_detail::avx512::narrow_bf16_row(x.data(), n, narrow.data());
    std::vector<float> widened(x.size());
    cpu_detail::avx512::widen_bf16_row(narrow.data(), n, widened.data());
    for (index_t i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
      CHECK(Eigen::numext::bit_cast<std::uint16_t>(narrow[k]) == Eigen::numext::bit_cast<std::uint16_t>(bf16(x[k])));
      CHECK(widened[k] == static_cast<float>(narrow[k]));
    }
  }
#else
  MESSAGE("built without the AVX-512 kernels");
#endif
}

TEST_CASE_TEMPLATE("decoding-step attention rows: dot_segments and add_scaled_segments, AVX-512 and portable, against double sums",
                   T, float, bf16, fp16) {
  // One cached row of T read in place against `segments` heads; head widths around the 16-lane tail masks and
  // OPT-2.7b's 80; strided outputs and probabilities, as the driver lays them out.
  using dot_fn = void (*)(const float*, const T*, index_t, index_t, float*, index_t);
  using add_fn = void (*)(const float*, index_t, const T*, index_t, index_t, float*);
  std::vector<std::pair<const char*, std::pair<dot_fn, add_fn>>> kernels = {
      {"portable", {cpu_detail::portable::dot_segments<T>, cpu_detail::portable::add_scaled_segments<T>}}};
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (host_cpu().has_avx512()) kernels.push_back({"avx512", {cpu_detail::avx512::dot_segments<T>, cpu_detail::avx512::add_scaled_segments<T>}});
#endif
  const index_t stride = 3;
  for (const auto& kernel : kernels)  // not a structured binding: clang 14 cannot capture one (CAPTURE is a lambda)
    for (index_t n : {1, 15, 16, 17, 80, 100})
      for (index_t segments : {1, 2, 5}) {
        const char* name = kernel.first;
        const auto& fns = kernel.second;
        CAPTURE(name);
        CAPTURE(n);
        CAPTURE(segments);
        const tensor<float> a = test::random_tensor<float>({segments * n}, 20), p = test::random_tensor<float>({segments * stride}, 22);
        const tensor<T> b = test::random_tensor<T>({segments * n}, 21);
        tensor<float> y = test::random_tensor<float>({segments * n}, 23);
        const std::vector<float> y0(y.data(), y.data() + y.numel());
        std::vector<float> dots(static_cast<std::size_t>(segments * stride), -1.0f);
        fns.first(a.data(), b.data(), segments, n, dots.data(), stride);
        fns.second(p.data(), stride, b.data(), segments, n, y.data());
        for (index_t s = 0; s < segments; ++s) {
          double want = 0;
          for (index_t i = 0; i < n; ++i) want += double(a.data()[s * n + i]) * to_float(b.data()[s * n + i]);
          CHECK(std::abs(dots[static_cast<std::size_t>(s * stride)] - want) <= 1e-5 * std::max(1.0, std::abs(want)));
          CHECK(dots[static_cast<std::size_t>(s * stride + 1)] == -1.0f);  // between the strided outputs: untouched
          for (index_t i = 0; i < n; ++i) {
            const double sum = y0[static_cast<std::size_t>(s * n + i)] + double(p.data()[s * stride]) * to_float(b.data()[s * n + i]);
            CHECK(std::abs(y.data()[s * n + i] - sum) <= 1e-6 * std::max(1.0, std::abs(sum)));
          }
        }
      }
}

TEST_CASE_TEMPLATE("layer_norm matches the reference (and works in place)", T, float, fp16, bf16) {
  context<cpu> ctx;
  tensor<T> x = test::random_tensor<T>({5, 3, 45}, 4), w = test::random_tensor<T>({45}, 5), b = test::random_tensor<T>({45}, 6);
  tensor<T> want(x.shape()), got(x.shape());
  reference::layer_norm<T>(x.get(), w.get(), b.get(), 1e-6f, want.mut());
  ops::layer_norm<T, cpu>(ctx, x.get(), w.get(), b.get(), 1e-6f, got.mut());
  CHECK(test::relative_max_diff(got.get(), want.get()) <= tolerance<T>());
  ops::layer_norm<T, cpu>(ctx, x.get(), w.get(), b.get(), 1e-6f, x.mut());
  CHECK(test::relative_max_diff(x.get(), want.get()) <= tolerance<T>());
  CHECK_THROWS_AS((ops::layer_norm<T, cpu>(ctx, x.get(), b.get().reshape({45}).columns(0, 44), b.get(), 1e-6f, got.mut())), shape_error);
}

TEST_CASE_TEMPLATE("rms_norm matches the reference", T, float, fp16, bf16) {
  context<cpu> ctx;
  tensor<T> x = test::random_tensor<T>({4, 41}, 13), w = test::random_tensor<T>({41}, 14);
  tensor<T> want(x.shape()), got(x.shape());
  reference::rms_norm<T>(x.get(), w.get(), 1e-6f, want.mut());
  ops::rms_norm<T, cpu>(ctx, x.get(), w.get(), 1e-6f, got.mut());
  CHECK(test::relative_max_diff(got.get(), want.get()) <= tolerance<T>());
}

TEST_CASE_TEMPLATE("gelu_erf, gelu_tanh, relu, add, mul and scale match the reference", T, float, fp16, bf16) {
  context<cpu> ctx;
  tensor<T> x = test::random_tensor<T>({9, 33}, 7), y = test::random_tensor<T>({9, 33}, 8);
  for (T* p = x.data(); p != x.data() + x.numel(); ++p) *p = from_float<T>(4.0f * to_float(*p));  // cover [-4, 4]
  tensor<T> want(x.shape()), got(x.shape());
  reference::gelu_erf<T>(x.get(), want.mut());
  ops::gelu_erf<T, cpu>(ctx, x.get(), got.mut());
  CHECK(test::relative_max_diff(got.get(), want.get()) <= tolerance<T>());
  reference::relu<T>(x.get(), want.mut());
  ops::relu<T, cpu>(ctx, x.get(), got.mut());
  CHECK(test::relative_max_diff(got.get(), want.get()) <= tolerance<T>());
  reference::add<T>(x.get(), y.get(), want.mut());
  ops::add<T, cpu>(ctx, x.get(), y.get(), got.mut());
  CHECK(test::relative_max_diff(got.get(), want.get()) <= tolerance<T>());
  reference::gelu_tanh<T>(x.get(), want.mut());
  ops::gelu_tanh<T, cpu>(ctx, x.get(), got.mut());
  CHECK(test::relative_max_diff(got.get(), want.get()) <= tolerance<T>());
  reference::mul<T>(x.get(), y.get(), want.mut());
  ops::mul<T, cpu>(ctx, x.get(), y.get(), got.mut());
  CHECK(test::relative_max_diff(got.get(), want.get()) <= tolerance<T>());
  ops::scale<T, cpu>(ctx, x.get(), 0.5f, got.mut());
  for (index_t i = 0; i < x.numel(); ++i) CHECK(to_float(got.data()[i]) == to_float(from_float<T>(0.5f * to_float(x.data()[i]))));
}

TEST_CASE_TEMPLATE("attention matches the reference: fused qkv columns, masks per key, per query and per head", T, float, fp16, bf16) {
  context<cpu> ctx;
  const index_t B = 2, Lq = 5, Lk = 7, H = 3, dh = 6, C = H * dh;
  tensor<T> qkv = test::random_tensor<T>({B, Lq, 3 * C}, 9);  // q from a fused projection (row stride 3C)
  tensor<T> kv = test::random_tensor<T>({B, Lk, 2 * C}, 10);
  view<const T> q = qkv.get().columns(0, C), k = kv.get().columns(0, C), v = kv.get().columns(C, C);
  tensor<float> key_mask({B, 1, Lk}), full_mask({B, Lq, Lk});
  for (index_t i = 0; i < key_mask.numel(); ++i) key_mask.data()[i] = (i % 3 == 2) ? -10000.0f : 0.0f;
  for (index_t i = 0; i < full_mask.numel(); ++i) full_mask.data()[i] = (i % 4 == 1) ? -3.4e38f : 0.25f;
  tensor<float> head_bias = test::random_tensor<float>({1, H, Lq, Lk}, 12);  // T5: one bias per head, shared by the batch
  for (cpu_kernels choice : {cpu_kernels::automatic, cpu_kernels::portable}) {
    set_cpu_kernels(choice);
    for (view<const float> mask : {view<const float>(), key_mask.get(), full_mask.get(), full_mask.get().slice(1, 1), head_bias.get()}) {
      tensor<T> want({B, Lq, C}), got({B, Lq, C});
      reference::attention<T>(q, k, v, mask, H, 0.4f, want.mut());
      ops::attention<T, cpu>(ctx, q, k, v, mask, H, 0.4f, got.mut());
      CHECK(test::relative_max_diff(got.get(), want.get()) <= tolerance<T>());
    }
  }
  set_cpu_kernels(cpu_kernels::automatic);
  tensor<T> out({B, Lq, C});
  CHECK_THROWS_AS((ops::attention<T, cpu>(ctx, q, k, v, {}, 4, 1.0f, out.mut())), shape_error);
  CHECK_THROWS_AS((ops::attention<T, cpu>(ctx, q, k, v, full_mask.get().columns(0, Lk - 1), H, 1.0f, out.mut())), shape_error);
  tensor<float> wrong_heads({1, H + 1, Lq, Lk});
  CHECK_THROWS_AS((ops::attention<T, cpu>(ctx, q, k, v, wrong_heads.get(), H, 1.0f, out.mut())), shape_error);
}

TEST_CASE_TEMPLATE("attention at GEMM sizes (more than 8 queries, odd lengths): every kernel path matches the reference", T,
                   float, bf16) {
  // bf16 runs on the bf16 GEMM kernels (AMX tiles, or avx512_bf16 with cpu_kernels::avx512): fp32 scores, P
  // rounded to bf16 before P V (as transformers does in bf16). Against the fp32 reference, rounded once, the bound
  // is one bf16 step of an output below 1 (2^-8: both round nearly the same value, and may land on neighbours)
  // plus P's rounding (2^-9 of the largest |v|, here 1): 6e-3 (measured: <= 2e-3 at these sizes). fp32: the
  // summation order only.
  context<cpu> ctx;
  struct sizes { index_t B, Lq, Lk, H, dh; };
  for (const sizes z : {sizes{2, 41, 37, 3, 24}, sizes{1, 257, 257, 2, 88}, sizes{1, 9, 70, 2, 64}}) {
    const index_t C = z.H * z.dh;
    CAPTURE(z.Lq);
    CAPTURE(z.dh);
    const tensor<T> q = test::random_tensor<T>({z.B, z.Lq, C}, 21), kv = test::random_tensor<T>({z.B, z.Lk, 2 * C}, 22);
    tensor<float> key_mask({z.B, 1, z.Lk});
    for (index_t i = 0; i < key_mask.numel(); ++i) key_mask.data()[i] = (i % 5 == 3) ? -10000.0f : 0.0f;
    const tensor<float> head_bias = test::random_tensor<float>({1, z.H, z.Lq, z.Lk}, 23);  // T5: a bias per head
    for (view<const float> mask : {key_mask.get(), head_bias.get()}) {
      CAPTURE(mask.rank());
      tensor<T> want({z.B, z.Lq, C});
      reference::attention<T>(q.get(), kv.get().columns(0, C), kv.get().columns(C, C), mask, z.H, 0.2f, want.mut());
      for (cpu_kernels choice : {cpu_kernels::automatic, cpu_kernels::avx512, cpu_kernels::portable}) {
        CAPTURE(static_cast<int>(choice));
        set_cpu_kernels(choice);
        tensor<T> got({z.B, z.Lq, C});
        ops::attention<T, cpu>(ctx, q.get(), kv.get().columns(0, C), kv.get().columns(C, C), mask, z.H, 0.2f, got.mut());
        const double d = test::relative_max_diff(got.get(), want.get());
        CAPTURE(d);
        CHECK(d <= (std::is_same_v<T, float> ? tolerance<float>() : 6e-3));
      }
    }
  }
  set_cpu_kernels(cpu_kernels::automatic);
}

#if defined(_OPENMP)
TEST_CASE("threads: a one-thread split runs inline, and kernels inside a team do not open nested teams") {
  // A one-thread OpenMP region is an inactive level: a kernel inside it may open a nested team of 2, whose
  // thread libgomp creates and ends every time (the decode step's per-head attention did that 2,048 times a step).
  const int saved = Eigen::nbThreads();
  Eigen::setNbThreads(2);
  int level_inline = -1;
  cpu_detail::parallel_for(3, 1, [&](index_t, index_t slot) {
    if (slot == 0) level_inline = omp_get_level();
  });
  CHECK(level_inline == 0);
  int threads_inside = 0;
  cpu_detail::parallel_for(2, 2, [&](index_t, index_t slot) {
    if (slot == 0) threads_inside = cpu_detail::kernel_threads(1000);
  });
  CHECK(threads_inside == 1);
  CHECK(cpu_detail::kernel_threads(1000) == 2);
  CHECK(cpu_detail::kernel_threads(1) == 1);
  Eigen::setNbThreads(saved);
}
#endif

TEST_CASE("cast rounds to nearest even and widens exactly") {
  context<cpu> ctx;
  tensor<float> x({2, 3});
  const float values[] = {1.0f, 1.00390625f, 1.01171875f, -2.5f, 3.3e38f, 0.0f};  // bf16 ties: 1 + 2^-8, 1 + 3 * 2^-8
  std::copy_n(values, 6, x.data());
  tensor<bf16> narrow({2, 3});
  ops::cast<float, bf16, cpu>(ctx, x.get(), narrow.mut());
  CHECK(to_float(narrow.data()[1]) == 1.0f);         // tie to even
  CHECK(to_float(narrow.data()[2]) == 1.015625f);    // tie to even (up)
  CHECK(to_float(narrow.data()[3]) == -2.5f);
  tensor<float> wide({2, 3});
  ops::cast<bf16, float, cpu>(ctx, narrow.get(), wide.mut());
  for (index_t i = 0; i < 6; ++i) CHECK(wide.data()[i] == to_float(narrow.data()[i]));
  CHECK_THROWS_AS((ops::cast<float, bf16, cpu>(ctx, x.get(), narrow.mut().reshape({3, 2}))), shape_error);
}

TEST_CASE_TEMPLATE("patchify matches the reference", T, float, bf16) {
  context<cpu> ctx;
  tensor<float> pixels = test::random_tensor<float>({2, 3, 12, 8}, 11);
  tensor<T> want({2, 6, 3 * 16}), got({2, 6, 3 * 16});
  reference::patchify<T>(pixels.get(), 4, want.mut());
  ops::patchify<T, cpu>(ctx, pixels.get(), 4, got.mut());
  CHECK(test::relative_max_diff(got.get(), want.get()) == 0.0);
  tensor<T> bad({2, 6, 3 * 9});
  CHECK_THROWS_AS((ops::patchify<T, cpu>(ctx, pixels.get(), 3, bad.mut())), shape_error);
}
