#pragma once
/// \file
/// A read-only memory map of a whole file (POSIX). Weights are read through it and converted tensor by tensor,
/// so a checkpoint never needs twice its size in RAM.

#include "../core/error.hpp"

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace qformer {

class mapped_file {
 public:
  explicit mapped_file(std::string path) : path_(std::move(path)) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw load_error(path_, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw load_error(path_, "not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        throw load_error(path_, std::string("cannot map: ") + std::strerror(err));
      }
      data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);
  }
  /// Views bytes the caller owns (they must outlive this object) under a name for messages: parsers that take a
  /// mapped_file then read buffers as well (fuzzing, files already in memory). release() does nothing here.
  static mapped_file borrow(std::string name, const std::byte* data, std::size_t size) {
    return mapped_file(std::move(name), data, size);
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& o) noexcept
      : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)),
        owned_(std::exchange(o.owned_, false)) {}
  ~mapped_file() {
    if (data_ && owned_) ::munmap(const_cast<std::byte*>(data_), size_);
  }

  /// Drops the pages wholly inside [offset, offset + length) from this process's memory (they are re-read from
  /// the file if touched again). Loading calls it after converting each tensor, so resident memory holds the
  /// converted weights, not the file as well.
  void release(std::size_t offset, std::size_t length) const noexcept {
    static const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t begin = (offset + page - 1) / page * page, end = (offset + length) / page * page;
    if (data_ && owned_ && end > begin) ::madvise(const_cast<std::byte*>(data_) + begin, end - begin, MADV_DONTNEED);
  }

  const std::string& path() const noexcept { return path_; }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  mapped_file(std::string name, const std::byte* data, std::size_t size)
      : path_(std::move(name)), data_(data), size_(size), owned_(false) {}

  std::string path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  bool owned_ = true;  // false for borrow(): not ours to unmap or advise
};

}  // namespace qformer
