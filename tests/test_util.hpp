#pragma once
// Helpers shared by the test files: fixtures, random tensors, comparisons, temporary folders.

#include <qformer/core/tensor.hpp>
#include <qformer/io/safetensors.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

namespace test {

/// The fixtures' folder: QFORMER_TEST_DATA from the environment (a test binary run in another checkout, as on the
/// GPU machine), else the source tree's tests/data the build recorded.
inline std::string data_dir() {
  const char* from_environment = std::getenv("QFORMER_TEST_DATA");
  return from_environment && *from_environment ? from_environment : QFORMER_TEST_DATA;
}
inline std::string fixture(const std::string& name) { return data_dir() + "/" + name; }

/// A fresh, empty folder under the system temp dir, removed at scope exit.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("qformer-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

/// Exit status (-1 if not a normal exit) and standard output of a shell command line (redirect inside it).
struct shell_result {
  int status;
  std::string out;
};
inline shell_result run_shell(const std::string& command) {
  FILE* p = ::popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int raw = ::pclose(p);
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, out};
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Uniform random values in [-1, 1), rounded to T.
template <class T>
qformer::tensor<T> random_tensor(const qformer::shape& s, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  qformer::tensor<T> t(s);
  for (qformer::index_t i = 0; i < t.numel(); ++i) t.data()[i] = qformer::from_float<T>(u(rng));
  return t;
}

/// max |a - b| / max(1, max |b|) over two matrices of equal shape (strides may differ).
template <class A, class B>
double relative_max_diff(qformer::view<A> a, qformer::view<B> b) {
  REQUIRE(a.shape() == b.shape());
  double diff = 0, ref = 0;
  for (qformer::index_t r = 0; r < a.rows(); ++r)
    for (qformer::index_t c = 0; c < a.cols(); ++c) {
      const double x = qformer::to_float(a.row(r)[c]), y = qformer::to_float(b.row(r)[c]);
      if (std::isnan(x) != std::isnan(y)) return INFINITY;
      diff = std::max(diff, std::abs(x - y));
      ref = std::max(ref, std::abs(y));
    }
  return diff / std::max(1.0, ref);
}

/// Checks `got` against tensor `name` of a reference safetensors file with the project's 1e-4 bound.
template <class T>
void check_against_reference(const qformer::safetensors_file& ref, const std::string& name, qformer::view<T> got,
                             double bound = 1e-4) {
  const qformer::tensor<float> want = ref.load<float>(name);
  CAPTURE(name);
  REQUIRE(got.shape() == want.shape());
  const double d = relative_max_diff(got, want.get());
  CAPTURE(d);
  CHECK(d <= bound);
}

}  // namespace test
