#pragma once
/// \file
/// Typed errors. Every message names what failed and where (file, tensor or field), so a user can act on it.

#include <stdexcept>
#include <string>

namespace qformer {

/// Base of every error qformer throws on purpose.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}
};

/// A file could not be read, or its bytes do not form what they claim (safetensors, index, image).
class load_error : public error {
 public:
  load_error(std::string file, std::string what)
      : error(file + ": " + what), file_(std::move(file)) {}
  const std::string& file() const noexcept { return file_; }

 private:
  std::string file_;
};

/// A tensor exists but its shape (or dtype) is not the one the model needs; also shape misuse of an op.
class shape_error : public error {
 public:
  explicit shape_error(const std::string& what) : error(what) {}
};

/// config.json (or another JSON settings file) has a missing, mistyped or out-of-range field.
class config_error : public error {
 public:
  config_error(std::string file, std::string field, const std::string& what)
      : error(file + ": field '" + field + "': " + what), file_(std::move(file)), field_(std::move(field)) {}
  const std::string& file() const noexcept { return file_; }
  const std::string& field() const noexcept { return field_; }

 private:
  std::string file_, field_;
};

/// A caller passed an argument the library cannot use (bad option, input tensor of the wrong kind).
class invalid_argument : public error {
 public:
  explicit invalid_argument(const std::string& what) : error(what) {}
};

}  // namespace qformer
