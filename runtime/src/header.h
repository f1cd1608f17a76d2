//===- header.h - safetensors headers against the manifest -----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// At load time libmoert re-reads the header of every weight file and checks
// that each tensor of the manifest still has the name, dtype, shape and byte
// range it had when the model was compiled. A safetensors file starts with an
// 8-byte little-endian length N and N bytes of JSON:
//
//   {"NAME": {"dtype": "F32", "shape": [R, C], "data_offsets": [B, E]}, ...,
//    "__metadata__": {"KEY": "VALUE", ...}}
//
// with the offsets relative to the data section (byte 8 + N). The header is
// untrusted: the parser is strict JSON (RFC 8259, UTF-8) read against that
// schema, never builds a generic tree (so nesting is bounded by the schema:
// three levels), checks every number, length and offset before it is used,
// and accepts what the compiler's reader accepts except duplicate keys
// (llvm::json keeps the last), numbers outside the JSON grammar (leading
// zeros, '+') and shapes of more than 64 dimensions. No LLVM here: this file
// also builds alone into the fuzzer (runtime/fuzz).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_SRC_HEADER_H
#define MOERT_SRC_HEADER_H

#include "moert/program.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moert {

/// The largest header accepted (as the compiler's reader and the format's
/// reference reader).
constexpr uint64_t kMaxHeaderBytes = 100 * 1000 * 1000;
/// The most dimensions a tensor's shape may have.
constexpr size_t kMaxRank = 64;

/// One tensor of a header.
struct HeaderTensor {
  std::string name;
  const char *dtype = nullptr; // "F32", ...: one of the format's names
  std::vector<uint64_t> shape;
  /// Byte range relative to the data section.
  uint64_t begin = 0, end = 0;
};

struct Header {
  /// Absolute offset of the data section (8 + header length).
  uint64_t dataOffset = 0;
  /// Tensors sorted by name.
  std::vector<HeaderTensor> tensors;
  /// The "__metadata__" entries, in the file's order.
  std::vector<std::pair<std::string, std::string>> metadata;
  /// The tensor called `name`, or null.
  const HeaderTensor *find(const char *name) const;
};

/// Parses the JSON text of a header (`json`, `length` bytes) of a file of
/// `fileSize` bytes. Returns an empty string on success, else what is wrong
/// (without the file's name).
std::string parseHeader(const char *json, size_t length, uint64_t fileSize,
                        Header &out);

/// Checks `count` manifest entries of one file against its header: present,
/// same dtype, same shape ([rows] for rank 1, [rows, cols] for rank 2), same
/// absolute byte range. Returns an empty string or the first difference.
std::string checkManifest(const Header &header,
                          const moert_weight_desc *const *weights,
                          size_t count);

/// How many bytes of a file of `fileSize` bytes starting with `prefix` (its
/// first 8 bytes, or fewer when the file is shorter) `checkWeightFile`
/// needs: the length prefix and the header, or just the prefix when the
/// length it gives is not acceptable.
uint64_t headerImageBytes(const unsigned char *prefix, size_t prefixSize,
                          uint64_t fileSize);

/// The whole load-time check of one weight file: `image` holds its first
/// `imageSize` bytes (at least headerImageBytes() of them, or the whole
/// file), `fileSize` is its size. Checks the length prefix, parses the
/// header, and compares the manifest entries with it. Returns an empty
/// string or what is wrong. With `build`, the file must also carry
/// "__metadata__" "moe.build" equal to it: the quantised weights file
/// moe-compile wrote with this executable, not another build's.
std::string checkWeightFile(const unsigned char *image, size_t imageSize,
                            uint64_t fileSize,
                            const moert_weight_desc *const *weights,
                            size_t count, const char *build = nullptr);

} // namespace moert

#endif // MOERT_SRC_HEADER_H
