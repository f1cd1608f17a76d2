//===- GgufFuzzer.cpp - libFuzzer target for the GGUF parser ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Feeds arbitrary bytes, as a whole GGUF file, to gguf::parse. Beyond "no
// crash, no sanitizer report", for every file it accepts it checks what the
// frontend and the runtime rely on: the data section and every tensor's
// bytes lie inside the file, aligned and disjoint; types are ones the parser
// accepts, with whole blocks per row; names and keys are unique and found by
// the lookups; and writing the parsed header back out gives the input's
// bytes (so nothing was skipped or misread).
//
//===----------------------------------------------------------------------===//

#include "gguf.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace moert::gguf;

static void check(bool condition) {
  if (!condition)
    std::abort();
}

namespace {

/// Writes a parsed header back in the file's encoding.
struct Writer {
  std::string out;
  /// A float that is NaN: its payload may not survive float -> double ->
  /// float, so the bytes are not compared.
  bool sawNaN = false;

  void le(uint64_t v, unsigned bytes) {
    for (unsigned i = 0; i < bytes; ++i)
      out += char(v >> (8 * i) & 0xff);
  }
  void str(const std::string &s) {
    le(s.size(), 8);
    out += s;
  }
  void scalar(ValueType t, uint64_t u, int64_t i, double f) {
    switch (t) {
    case ValueType::UINT8:
    case ValueType::BOOL:
      return le(u, 1);
    case ValueType::UINT16:
      return le(u, 2);
    case ValueType::UINT32:
      return le(u, 4);
    case ValueType::UINT64:
      return le(u, 8);
    case ValueType::INT8:
      return le(uint64_t(i), 1);
    case ValueType::INT16:
      return le(uint64_t(i), 2);
    case ValueType::INT32:
      return le(uint64_t(i), 4);
    case ValueType::INT64:
      return le(uint64_t(i), 8);
    case ValueType::FLOAT32: {
      sawNaN |= std::isnan(f);
      float g = float(f);
      uint32_t bits;
      std::memcpy(&bits, &g, 4);
      return le(bits, 4);
    }
    case ValueType::FLOAT64: {
      sawNaN |= std::isnan(f);
      uint64_t bits;
      std::memcpy(&bits, &f, 8);
      return le(bits, 8);
    }
    case ValueType::STRING:
    case ValueType::ARRAY:
      break;
    }
    check(false);
  }
  void value(const Value &v) {
    check(valueTypeName(v.type) != nullptr);
    if (v.type == ValueType::STRING)
      return str(v.str);
    if (v.type != ValueType::ARRAY) {
      check(v.str.empty() && v.count == 0);
      if (v.type == ValueType::BOOL)
        check(v.u <= 1 && v.asBool().has_value());
      return scalar(v.type, v.u, v.i, v.f);
    }
    le(uint32_t(v.elemType), 4);
    le(v.count, 8);
    // Exactly one vector holds the elements.
    size_t filled = !v.uints.empty() + !v.ints.empty() + !v.floats.empty() +
                    !v.strings.empty() + !v.arrays.empty();
    check(filled <= 1);
    for (uint64_t k = 0; k < v.count; ++k) {
      switch (v.elemType) {
      case ValueType::STRING:
        check(v.strings.size() == v.count);
        str(v.strings[k]);
        break;
      case ValueType::ARRAY:
        check(v.arrays.size() == v.count && v.arrays[k].isArray());
        value(v.arrays[k]);
        break;
      case ValueType::INT8:
      case ValueType::INT16:
      case ValueType::INT32:
      case ValueType::INT64:
        check(v.ints.size() == v.count);
        scalar(v.elemType, 0, v.ints[k], 0);
        break;
      case ValueType::FLOAT32:
      case ValueType::FLOAT64:
        check(v.floats.size() == v.count);
        scalar(v.elemType, 0, 0, v.floats[k]);
        break;
      default:
        check(v.uints.size() == v.count);
        check(v.elemType != ValueType::BOOL || v.uints[k] <= 1);
        scalar(v.elemType, v.uints[k], 0, 0);
      }
    }
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  File f;
  std::string error = parse(data, size, f);
  if (!error.empty()) {
    check(f.metadata.empty() && f.tensors.empty());
    return 0;
  }
  check(f.version >= kMinVersion && f.version <= kMaxVersion);
  check(f.alignment && !(f.alignment & (f.alignment - 1)) &&
        f.alignment <= kMaxAlignment);
  check(f.dataOffset % f.alignment == 0 && f.dataOffset <= size);

  Writer w;
  w.out = "GGUF";
  w.le(f.version, 4);
  w.le(f.tensors.size(), 8);
  w.le(f.metadata.size(), 8);
  for (const auto &[key, value] : f.metadata) {
    check(!key.empty() && key.size() <= kMaxNameBytes);
    check(f.find(key) == &value);
    w.str(key);
    w.le(uint32_t(value.type), 4);
    w.value(value);
  }
  std::vector<const TensorInfo *> byOffset;
  for (const TensorInfo &t : f.tensors) {
    check(!t.name.empty() && t.name.size() <= kMaxNameBytes);
    check(f.findTensor(t.name) == &t);
    check(!t.dims.empty() && t.dims.size() <= kMaxDims);
    uint64_t blockElems = 0, blockBytes = 0;
    check(typeLayout(t.type, blockElems, blockBytes) && typeName(t.type));
    check(t.dims[0] % blockElems == 0);
    check(t.elements() <= uint64_t(INT64_MAX));
    if (t.elements())
      check(t.bytes / (t.elements() / blockElems) == blockBytes &&
            t.bytes % blockBytes == 0);
    else
      check(t.bytes == 0);
    std::vector<uint64_t> shape = t.shape();
    check(
        std::equal(shape.rbegin(), shape.rend(), t.dims.begin(), t.dims.end()));
    check(t.offset >= f.dataOffset && t.offset <= size &&
          t.bytes <= size - t.offset);
    check((t.offset - f.dataOffset) % f.alignment == 0);
    if (t.bytes)
      byOffset.push_back(&t);
    w.str(t.name);
    w.le(t.dims.size(), 4);
    for (uint64_t d : t.dims)
      w.le(d, 8);
    w.le(t.type, 4);
    w.le(t.offset - f.dataOffset, 8);
  }
  std::sort(byOffset.begin(), byOffset.end(),
            [](const TensorInfo *a, const TensorInfo *b) {
              return a->offset < b->offset;
            });
  for (size_t i = 1; i < byOffset.size(); ++i)
    check(byOffset[i - 1]->offset + byOffset[i - 1]->bytes <=
          byOffset[i]->offset);

  // The header ends where the padding before the data section begins.
  check(w.out.size() <= f.dataOffset &&
        f.dataOffset - w.out.size() < f.alignment);
  check(w.sawNaN || std::memcmp(w.out.data(), data, w.out.size()) == 0);
  check(f.find("") == nullptr && f.findTensor("") == nullptr);
  return 0;
}
