//===- gguf.h - GGUF headers, strictly checked -------------------*- C++
//-*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The header of a GGUF file (llama.cpp's format), read by the compiler's GGUF
// frontend at compile time and by libmoert when it loads the file. A GGUF
// file (versions 2 and 3, little-endian) is
//
//   "GGUF", uint32 version, uint64 tensor_count, uint64 kv_count,
//   kv_count x { string key, uint32 value_type, value },
//   tensor_count x { string name, uint32 n_dims, uint64 dims[n_dims],
//                    uint32 ggml_type, uint64 offset },
//   padding to the alignment (`general.alignment`, default 32),
//   the data section,
//
// where a string is a uint64 length and that many bytes, and a tensor's
// offset is relative to the data section. dims are innermost first: dims[0]
// (ggml's ne[0]) is the length of a row.
//
// The file is untrusted. parse() reads the whole image the caller mapped,
// checks every count, length and offset against the bytes left before it
// allocates or reads, and refuses what is not well-formed with one message
// that names the key or the tensor and the offending value (never the file's
// name: the caller adds it). Keys and tensor names must be non-empty, valid
// UTF-8 without NUL bytes, at most kMaxNameBytes; string values are kept as
// bytes (tokenizer vocabularies are not always UTF-8). Memory stays within a
// small multiple of the file's size whatever the counts say. No LLVM and no
// exceptions here: this file also builds alone into a libFuzzer target
// (runtime/fuzz/GgufFuzzer.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_SRC_GGUF_H
#define MOERT_SRC_GGUF_H

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moert {
namespace gguf {

/// The bytes before the key-value pairs: magic, version and the two counts.
constexpr uint64_t kFixedHeaderBytes = 24;
/// The versions accepted.
constexpr uint32_t kMinVersion = 2, kMaxVersion = 3;
/// The longest key or tensor name, in bytes (llama.cpp itself keeps tensor
/// names under 64 bytes; we need no such limit).
constexpr uint64_t kMaxNameBytes = 64 * 1024;
/// The most dimensions a tensor may have (GGML_MAX_DIMS).
constexpr uint32_t kMaxDims = 4;
/// How deep arrays may nest: an array of arrays, no deeper.
constexpr unsigned kMaxArrayDepth = 2;
/// The alignment when the file gives none, and the largest it may give.
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxAlignment = uint64_t(1) << 20;
/// The fewest bytes a key-value pair (8-byte key length, type, one-byte
/// value) and a tensor info (name length, n_dims, one dim, type, offset)
/// can take: counts that the rest of the file cannot hold are refused
/// before anything is allocated for them.
constexpr uint64_t kMinKeyValueBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

/// The type of a metadata value (gguf_type).
enum class ValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

/// "UINT32", ..., or nullptr for a number that is not a value type.
const char *valueTypeName(ValueType type);

/// A metadata value. Exactly the members for its type are set; the others
/// stay empty or zero.
struct Value {
  ValueType type = ValueType::UINT8;

  /// Scalars. UINT8, UINT16, UINT32, UINT64 and BOOL (0 or 1) in `u`;
  /// INT8, INT16, INT32, INT64 in `i`; FLOAT32 and FLOAT64 in `f`.
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  /// STRING: its bytes, as in the file.
  std::string str;

  /// ARRAY: the elements' type and count, and the `count` elements in the
  /// one vector for that type: `uints` for UINT8/16/32/64 and BOOL, `ints`
  /// for INT8/16/32/64, `floats` for FLOAT32/64, `strings` for STRING and
  /// `arrays` for ARRAY (each a Value of type ARRAY).
  ValueType elemType = ValueType::UINT8;
  uint64_t count = 0;
  std::vector<uint64_t> uints;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::vector<Value> arrays;

  bool isArray() const { return type == ValueType::ARRAY; }
  /// A scalar of one of the eight integer types (not BOOL).
  bool isInteger() const;
  /// An integer scalar that is not negative.
  std::optional<uint64_t> asUInt() const;
  /// An integer scalar that fits in int64_t.
  std::optional<int64_t> asInt() const;
  /// A FLOAT32 or FLOAT64 scalar (integers are not converted).
  std::optional<double> asFloat() const;
  /// A BOOL.
  std::optional<bool> asBool() const;
  /// A STRING's bytes, or null.
  const std::string *asString() const;
};

/// One tensor's info.
struct TensorInfo {
  std::string name;
  /// As in the file: dims[0] (ne[0]) is the row length.
  std::vector<uint64_t> dims;
  /// The ggml type id; typeLayout() knows it.
  uint32_t type = 0;
  /// Absolute offset of the data in the file (the data section's start plus
  /// the relative offset the file gives).
  uint64_t offset = 0;
  /// Bytes of data: rows x (dims[0] / block elements) x block bytes.
  uint64_t bytes = 0;
  /// The shape in row-major order (dims reversed): [rows, ..., row length].
  std::vector<uint64_t> shape() const;
  /// The number of elements (the product of dims; fits in int64_t).
  uint64_t elements() const;
};

struct File {
  uint32_t version = 0;
  uint64_t alignment = kDefaultAlignment;
  /// Absolute offset of the data section: the end of the tensor infos
  /// rounded up to the alignment (at most the file's size).
  uint64_t dataOffset = 0;
  /// The key-value pairs, in the file's order; keys are unique.
  std::vector<std::pair<std::string, Value>> metadata;
  /// The tensors, in the file's order; names are unique.
  std::vector<TensorInfo> tensors;

  /// The value of `key`, or null. O(log n) through keyIndex; a linear
  /// search when keyIndex does not match metadata's size (a File built or
  /// grown by hand). Renaming keys in place needs keyIndex rebuilt.
  const Value *find(const std::string &key) const;
  /// The tensor called `name`, or null; O(log n) after parse() as find().
  const TensorInfo *findTensor(const std::string &name) const;

  /// Indices into metadata and tensors sorted by key and name (parse()
  /// fills them).
  std::vector<size_t> keyIndex, tensorIndex;
};

/// Parses the memory image of a whole GGUF file (`size` bytes; the caller
/// maps it). Returns "" on success with `out` filled, or what is wrong
/// (without the file's name) with `out` reset to an empty File. How many
/// leading bytes the header takes is not knowable upfront, so this always takes
/// the whole image.
std::string parse(const unsigned char *data, uint64_t size, File &out);

/// The ggml type ids of the types typeLayout() accepts (ggml.h).
enum GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

/// "Q4_K", ..., the name of a ggml type id, or nullptr if unknown.
const char *typeName(uint32_t ggmlType);

/// The block of a ggml type this parser accepts (F32, F16, BF16, Q4_0, Q4_1,
/// Q8_0, Q4_K, Q5_K, Q6_K): elements and bytes per block. False for the others.
bool typeLayout(uint32_t ggmlType, uint64_t &blockElems, uint64_t &blockBytes);

/// Checks a weight a compiled model reads from a parsed file: `name` is a
/// tensor's name, or "NAME[E]" for expert E of a tensor NAME whose first
/// row-major dimension stacks the experts (llama.cpp's ffn_*_exps); the
/// tensor (or its slice) must have ggml type `ggmlType`, row-major shape
/// `shape` (without the stacking dimension) and lie at bytes [offset,
/// offset + size) of the file. Returns "" or what differs (without the
/// file's name). Shared by the compiler (IR from moe-translate) and the
/// runtime (at load time), so both hold a file to the same rules.
std::string checkWeight(const File &file, const std::string &name,
                        uint32_t ggmlType, const std::vector<uint64_t> &shape,
                        uint64_t offset, uint64_t size);

} // namespace gguf
} // namespace moert

#endif // MOERT_SRC_GGUF_H
