//===- gguf.cpp - GGUF headers, strictly checked -----------------*- C++
//-*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "gguf.h"
#include "messages.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace moert {
namespace gguf {

namespace {

using msg::format;
using msg::formatDims;
using msg::quote;

using ull = unsigned long long;

uint64_t readLE(const unsigned char *p, unsigned bytes) {
  uint64_t v = 0;
  for (unsigned i = bytes; i-- > 0;)
    v = v << 8 | p[i];
  return v;
}

/// Whether `s` is well-formed UTF-8 (no overlong forms, no surrogates,
/// nothing past U+10FFFF).
bool validUtf8(const std::string &s) {
  const auto *p = reinterpret_cast<const unsigned char *>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    size_t len = p[i] < 0x80 ? 1 : msg::utf8Sequence(p + i, n - i);
    if (len == 0)
      return false;
    i += len;
  }
  return true;
}

/// Bytes of a scalar value type, or 0 for STRING, ARRAY and unknown types.
unsigned scalarBytes(ValueType t) {
  switch (t) {
  case ValueType::UINT8:
  case ValueType::INT8:
  case ValueType::BOOL:
    return 1;
  case ValueType::UINT16:
  case ValueType::INT16:
    return 2;
  case ValueType::UINT32:
  case ValueType::INT32:
  case ValueType::FLOAT32:
    return 4;
  case ValueType::UINT64:
  case ValueType::INT64:
  case ValueType::FLOAT64:
    return 8;
  case ValueType::STRING:
  case ValueType::ARRAY:
    break;
  }
  return 0;
}

bool isSigned(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 ||
         t == ValueType::INT32 || t == ValueType::INT64;
}
bool isFloat(ValueType t) {
  return t == ValueType::FLOAT32 || t == ValueType::FLOAT64;
}

int64_t signExtend(uint64_t raw, unsigned bytes) {
  switch (bytes) {
  case 1:
    return int8_t(uint8_t(raw));
  case 2:
    return int16_t(uint16_t(raw));
  case 4:
    return int32_t(uint32_t(raw));
  default:
    return int64_t(raw);
  }
}

double toDouble(uint64_t raw, unsigned bytes) {
  if (bytes == 4) {
    uint32_t bits = uint32_t(raw);
    float f;
    std::memcpy(&f, &bits, 4);
    return double(f);
  }
  double d;
  std::memcpy(&d, &raw, 8);
  return d;
}

struct GgmlType {
  const char *name;
  uint64_t blockElems, blockBytes; // 0: not accepted here
};

/// ggml's enum ggml_type (ggml.h), by id. Ids 4 and 5 (Q4_2, Q4_3) were
/// removed before GGUF existed; 31-33 and 36-38 (the repacked Q4_0 and
/// IQ4_NL layouts) were written to GGUF files for a while and then removed.
constexpr GgmlType kGgmlTypes[] = {
    {"F32", 1, 4},        {"F16", 1, 2},        {"Q4_0", 32, 18},
    {"Q4_1", 32, 20},     {nullptr, 0, 0},      {nullptr, 0, 0},
    {"Q5_0", 0, 0},       {"Q5_1", 0, 0},       {"Q8_0", 32, 34},
    {"Q8_1", 0, 0},       {"Q2_K", 0, 0},       {"Q3_K", 0, 0},
    {"Q4_K", 256, 144},   {"Q5_K", 256, 176},   {"Q6_K", 256, 210},
    {"Q8_K", 0, 0},       {"IQ2_XXS", 0, 0},    {"IQ2_XS", 0, 0},
    {"IQ3_XXS", 0, 0},    {"IQ1_S", 0, 0},      {"IQ4_NL", 0, 0},
    {"IQ3_S", 0, 0},      {"IQ2_S", 0, 0},      {"IQ4_XS", 0, 0},
    {"I8", 0, 0},         {"I16", 0, 0},        {"I32", 0, 0},
    {"I64", 0, 0},        {"F64", 0, 0},        {"IQ1_M", 0, 0},
    {"BF16", 1, 2},       {"Q4_0_4_4", 0, 0},   {"Q4_0_4_8", 0, 0},
    {"Q4_0_8_8", 0, 0},   {"TQ1_0", 0, 0},      {"TQ2_0", 0, 0},
    {"IQ4_NL_4_4", 0, 0}, {"IQ4_NL_4_8", 0, 0}, {"IQ4_NL_8_8", 0, 0},
    {"MXFP4", 0, 0},
};
constexpr uint32_t kGgmlTypeCount = sizeof(kGgmlTypes) / sizeof(kGgmlTypes[0]);

/// What a message is about: "key 'K'", "tensor 'T'", ..., and, inside an
/// array, the element (built only when a message needs it).
struct Ctx {
  Ctx(const std::string &base) : base(&base) {}
  Ctx(const std::string &base, uint64_t element)
      : base(&base), element(element) {}
  const std::string *base;
  uint64_t element = UINT64_MAX;
  std::string str() const {
    if (element == UINT64_MAX)
      return *base;
    return *base + format(": element %llu", ull(element));
  }
};

/// Reads the image front to back. Every function returns false after
/// recording the first error in `error`.
class Reader {
public:
  Reader(const unsigned char *data, uint64_t size) : data(data), size(size) {}

  const unsigned char *data;
  uint64_t size, pos = 0;
  std::string error;

  uint64_t left() const { return size - pos; }

  bool fail(std::string message) {
    if (error.empty())
      error = std::move(message);
    return false;
  }

  bool pastEnd(const Ctx &ctx, const char *what) {
    return fail(format("%s: %s runs past the end of the file (%llu bytes)",
                       ctx.str().c_str(), what, ull(size)));
  }

  /// A little-endian integer of `bytes` bytes: the `what` of `ctx`.
  bool scalar(unsigned bytes, uint64_t &v, const Ctx &ctx, const char *what) {
    if (left() < bytes)
      return pastEnd(ctx, what);
    v = readLE(data + pos, bytes);
    pos += bytes;
    return true;
  }
  bool u32(uint32_t &v, const Ctx &ctx, const char *what) {
    uint64_t w;
    if (!scalar(4, w, ctx, what))
      return false;
    v = uint32_t(w);
    return true;
  }
  bool u64(uint64_t &v, const Ctx &ctx, const char *what) {
    return scalar(8, v, ctx, what);
  }

  /// A gguf_string: its length, checked against the bytes left, then its
  /// bytes.
  bool string(std::string &out, const Ctx &ctx, const char *what) {
    if (left() < 8)
      return pastEnd(ctx, (std::string(what) + " length").c_str());
    uint64_t length = readLE(data + pos, 8);
    pos += 8;
    if (length > left())
      return fail(format("%s: %s length %llu runs past the end of the file "
                         "(%llu bytes)",
                         ctx.str().c_str(), what, ull(length), ull(size)));
    out.assign(reinterpret_cast<const char *>(data + pos), size_t(length));
    pos += length;
    return true;
  }

  /// A key or a tensor name: a string that is not empty, at most
  /// kMaxNameBytes, valid UTF-8, without NUL bytes.
  bool name(std::string &out, const Ctx &ctx, const char *what) {
    if (!string(out, ctx, what))
      return false;
    if (out.empty())
      return fail(format("%s: %s is empty", ctx.str().c_str(), what));
    if (out.size() > kMaxNameBytes)
      return fail(format("%s: %s is %zu bytes, more than the %llu-byte limit",
                         ctx.str().c_str(), what, out.size(),
                         ull(kMaxNameBytes)));
    if (out.find('\0') != std::string::npos)
      return fail(format("%s: %s %s contains a NUL byte", ctx.str().c_str(),
                         what, quote(out).c_str()));
    if (!validUtf8(out))
      return fail(format("%s: %s %s is not valid UTF-8", ctx.str().c_str(),
                         what, quote(out).c_str()));
    return true;
  }

  /// A value of type `type`; `depth` arrays enclose it.
  bool value(Value &v, ValueType type, const Ctx &ctx, unsigned depth) {
    v.type = type;
    if (type == ValueType::STRING)
      return string(v.str, ctx, "string");
    if (type == ValueType::ARRAY)
      return array(v, ctx, depth);
    unsigned bytes = scalarBytes(type);
    if (!bytes)
      return fail(format("%s: unknown value type %u", ctx.str().c_str(),
                         unsigned(type)));
    uint64_t raw = 0;
    if (!scalar(bytes, raw, ctx, "value"))
      return false;
    if (type == ValueType::BOOL && raw > 1)
      return fail(format("%s: BOOL value %llu is neither 0 nor 1",
                         ctx.str().c_str(), ull(raw)));
    if (isSigned(type))
      v.i = signExtend(raw, bytes);
    else if (isFloat(type))
      v.f = toDouble(raw, bytes);
    else
      v.u = raw;
    return true;
  }

  bool array(Value &v, const Ctx &ctx, unsigned depth) {
    uint32_t elem = 0;
    if (!u32(elem, ctx, "array element type"))
      return false;
    ValueType t = ValueType(elem);
    const char *typeName = valueTypeName(t);
    if (!typeName)
      return fail(format("%s: array of unknown value type %u",
                         ctx.str().c_str(), elem));
    if (t == ValueType::ARRAY && depth + 2 > kMaxArrayDepth)
      return fail(format("%s: arrays nested more than %u deep",
                         ctx.str().c_str(), kMaxArrayDepth));
    uint64_t count = 0;
    if (!u64(count, ctx, "array count"))
      return false;
    // The fewest bytes an element takes: a scalar's size, a string's length,
    // an array's type and count.
    unsigned bytes = scalarBytes(t);
    uint64_t least = bytes ? bytes : t == ValueType::STRING ? 8 : 12;
    if (count > left() / least)
      return fail(format("%s: array of %llu %s elements runs past the end of "
                         "the file (%llu bytes)",
                         ctx.str().c_str(), ull(count), typeName, ull(size)));
    v.elemType = t;
    v.count = count;
    const std::string base = count ? ctx.str() : std::string();
    if (t == ValueType::STRING) {
      v.strings.resize(size_t(count));
      for (uint64_t k = 0; k < count; ++k)
        if (!string(v.strings[k], Ctx(base, k), "string"))
          return false;
      return true;
    }
    if (t == ValueType::ARRAY) {
      v.arrays.resize(size_t(count));
      for (uint64_t k = 0; k < count; ++k)
        if (!value(v.arrays[k], t, Ctx(base, k), depth + 1))
          return false;
      return true;
    }
    // Scalars: count * bytes <= left() was checked above.
    const unsigned char *p = data + pos;
    pos += count * bytes;
    if (isSigned(t)) {
      v.ints.resize(size_t(count));
      for (uint64_t k = 0; k < count; ++k)
        v.ints[k] = signExtend(readLE(p + k * bytes, bytes), bytes);
    } else if (isFloat(t)) {
      v.floats.resize(size_t(count));
      for (uint64_t k = 0; k < count; ++k)
        v.floats[k] = toDouble(readLE(p + k * bytes, bytes), bytes);
    } else {
      v.uints.resize(size_t(count));
      for (uint64_t k = 0; k < count; ++k) {
        uint64_t raw = readLE(p + k * bytes, bytes);
        if (t == ValueType::BOOL && raw > 1)
          return fail(format("%s: BOOL value %llu is neither 0 nor 1",
                             Ctx(base, k).str().c_str(), ull(raw)));
        v.uints[k] = raw;
      }
    }
    return true;
  }
};

template <typename T>
std::vector<size_t> sortedIndex(const std::vector<T> &items,
                                const std::string &(*key)(const T &)) {
  std::vector<size_t> index(items.size());
  for (size_t i = 0; i < index.size(); ++i)
    index[i] = i;
  std::sort(index.begin(), index.end(), [&](size_t a, size_t b) {
    int c = key(items[a]).compare(key(items[b]));
    return c != 0 ? c < 0 : a < b;
  });
  return index;
}

const std::string &keyOf(const std::pair<std::string, Value> &kv) {
  return kv.first;
}
const std::string &nameOf(const TensorInfo &t) { return t.name; }

template <typename T>
const T *lookup(const std::vector<T> &items, const std::vector<size_t> &index,
                const std::string &name, const std::string &(*key)(const T &)) {
  if (index.size() != items.size()) {
    for (const T &item : items)
      if (key(item) == name)
        return &item;
    return nullptr;
  }
  auto it = std::lower_bound(index.begin(), index.end(), name,
                             [&](size_t i, const std::string &n) {
                               return i >= items.size() || key(items[i]) < n;
                             });
  if (it == index.end() || *it >= items.size() || key(items[*it]) != name)
    return nullptr;
  return &items[*it];
}

} // namespace

const char *valueTypeName(ValueType type) {
  switch (type) {
  case ValueType::UINT8:
    return "UINT8";
  case ValueType::INT8:
    return "INT8";
  case ValueType::UINT16:
    return "UINT16";
  case ValueType::INT16:
    return "INT16";
  case ValueType::UINT32:
    return "UINT32";
  case ValueType::INT32:
    return "INT32";
  case ValueType::FLOAT32:
    return "FLOAT32";
  case ValueType::BOOL:
    return "BOOL";
  case ValueType::STRING:
    return "STRING";
  case ValueType::ARRAY:
    return "ARRAY";
  case ValueType::UINT64:
    return "UINT64";
  case ValueType::INT64:
    return "INT64";
  case ValueType::FLOAT64:
    return "FLOAT64";
  }
  return nullptr;
}

bool Value::isInteger() const {
  return type != ValueType::BOOL && scalarBytes(type) != 0 && !isFloat(type);
}

std::optional<uint64_t> Value::asUInt() const {
  if (!isInteger())
    return std::nullopt;
  if (isSigned(type)) {
    if (i < 0)
      return std::nullopt;
    return uint64_t(i);
  }
  return u;
}

std::optional<int64_t> Value::asInt() const {
  if (!isInteger())
    return std::nullopt;
  if (isSigned(type))
    return i;
  if (u > uint64_t(INT64_MAX))
    return std::nullopt;
  return int64_t(u);
}

std::optional<double> Value::asFloat() const {
  if (!isFloat(type))
    return std::nullopt;
  return f;
}

std::optional<bool> Value::asBool() const {
  if (type != ValueType::BOOL)
    return std::nullopt;
  return u != 0;
}

const std::string *Value::asString() const {
  return type == ValueType::STRING ? &str : nullptr;
}

std::vector<uint64_t> TensorInfo::shape() const {
  return std::vector<uint64_t>(dims.rbegin(), dims.rend());
}

uint64_t TensorInfo::elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims)
    if (__builtin_mul_overflow(n, d, &n))
      return UINT64_MAX;
  return n;
}

const Value *File::find(const std::string &key) const {
  const auto *kv = lookup(metadata, keyIndex, key, keyOf);
  return kv ? &kv->second : nullptr;
}

const TensorInfo *File::findTensor(const std::string &name) const {
  return lookup(tensors, tensorIndex, name, nameOf);
}

const char *typeName(uint32_t ggmlType) {
  return ggmlType < kGgmlTypeCount ? kGgmlTypes[ggmlType].name : nullptr;
}

bool typeLayout(uint32_t ggmlType, uint64_t &blockElems, uint64_t &blockBytes) {
  if (ggmlType >= kGgmlTypeCount || !kGgmlTypes[ggmlType].blockElems)
    return false;
  blockElems = kGgmlTypes[ggmlType].blockElems;
  blockBytes = kGgmlTypes[ggmlType].blockBytes;
  return true;
}

namespace {

std::string parseInto(const unsigned char *data, uint64_t size, File &out) {
  if (size >= 4 && std::memcmp(data, "GGUF", 4) != 0)
    return "not a GGUF file: it starts with " +
           quote(std::string(reinterpret_cast<const char *>(data), 4)) +
           ", not 'GGUF'";
  if (size < kFixedHeaderBytes)
    return format("file is %llu bytes, shorter than the %llu-byte GGUF header",
                  ull(size), ull(kFixedHeaderBytes));
  uint32_t version = uint32_t(readLE(data + 4, 4));
  uint32_t swapped = __builtin_bswap32(version);
  if (version > kMaxVersion && swapped >= 1 && swapped <= kMaxVersion)
    return format("big-endian GGUF file (version %u, byte-swapped); only "
                  "little-endian GGUF files are supported",
                  swapped);
  if (version < kMinVersion || version > kMaxVersion)
    return format("unsupported GGUF version %u", version);
  out.version = version;
  uint64_t tensorCount = readLE(data + 8, 8);
  uint64_t kvCount = readLE(data + 16, 8);

  Reader r(data, size);
  r.pos = kFixedHeaderBytes;
  if (kvCount > r.left() / kMinKeyValueBytes)
    return format("key-value count %llu is more than the %llu bytes after "
                  "the header can hold (at least %llu bytes each)",
                  ull(kvCount), ull(r.left()), ull(kMinKeyValueBytes));
  out.metadata.reserve(size_t(kvCount));
  for (uint64_t k = 0; k < kvCount; ++k) {
    std::string key;
    if (!r.name(key, format("key-value pair %llu", ull(k)), "key"))
      return r.error;
    std::string ctx = "key " + quote(key);
    uint32_t type = 0;
    if (!r.u32(type, ctx, "value type"))
      return r.error;
    Value v;
    if (!r.value(v, ValueType(type), ctx, 0))
      return r.error;
    out.metadata.emplace_back(std::move(key), std::move(v));
  }
  out.keyIndex = sortedIndex(out.metadata, keyOf);
  for (size_t k = 1; k < out.keyIndex.size(); ++k) {
    const std::string &key = out.metadata[out.keyIndex[k]].first;
    if (key == out.metadata[out.keyIndex[k - 1]].first)
      return "key " + quote(key) + " appears twice";
  }

  if (const Value *a = out.find("general.alignment")) {
    if (a->type != ValueType::UINT32) {
      const char *name = valueTypeName(a->type);
      return format("key 'general.alignment' must be a UINT32, not %s",
                    name ? name : "?");
    }
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      return format("key 'general.alignment' is %llu, not a power of two",
                    ull(a->u));
    if (a->u > kMaxAlignment)
      return format("key 'general.alignment' is %llu, more than the %llu "
                    "limit",
                    ull(a->u), ull(kMaxAlignment));
    out.alignment = a->u;
  }

  if (tensorCount > r.left() / kMinTensorInfoBytes)
    return format("tensor count %llu is more than the %llu bytes after the "
                  "key-value pairs can hold (at least %llu bytes each)",
                  ull(tensorCount), ull(r.left()), ull(kMinTensorInfoBytes));
  out.tensors.reserve(size_t(tensorCount));
  for (uint64_t k = 0; k < tensorCount; ++k) {
    TensorInfo t;
    if (!r.name(t.name, format("tensor %llu", ull(k)), "name"))
      return r.error;
    std::string ctx = "tensor " + quote(t.name);
    uint32_t nDims = 0;
    if (!r.u32(nDims, ctx, "n_dims"))
      return r.error;
    if (nDims == 0 || nDims > kMaxDims)
      return format("%s: n_dims is %u, not between 1 and %u", ctx.c_str(),
                    nDims, kMaxDims);
    t.dims.resize(nDims);
    for (uint64_t &d : t.dims)
      if (!r.u64(d, ctx, "dims"))
        return r.error;
    uint64_t relative = 0;
    if (!r.u32(t.type, ctx, "type") || !r.u64(relative, ctx, "offset"))
      return r.error;

    // ggml counts elements in int64_t.
    uint64_t elements = 1;
    for (uint64_t d : t.dims)
      if (d > uint64_t(INT64_MAX) ||
          __builtin_mul_overflow(elements, d, &elements) ||
          elements > uint64_t(INT64_MAX))
        return format("%s: dims %s overflow int64", ctx.c_str(),
                      formatDims(t.dims).c_str());
    uint64_t blockElems, blockBytes;
    if (!typeLayout(t.type, blockElems, blockBytes)) {
      if (const char *name = typeName(t.type))
        return format("%s: unsupported ggml type %u (%s)", ctx.c_str(), t.type,
                      name);
      return format("%s: unknown ggml type id %u", ctx.c_str(), t.type);
    }
    const char *type = typeName(t.type);
    if (t.dims[0] % blockElems != 0)
      return format("%s: row length %llu (dims[0]) is not a multiple of the "
                    "%s block (%llu elements)",
                    ctx.c_str(), ull(t.dims[0]), type, ull(blockElems));
    // dims[0] / blockElems * blockBytes per row, times the rows.
    uint64_t bytes = t.dims[0] / blockElems;
    bool overflows = __builtin_mul_overflow(bytes, blockBytes, &bytes);
    for (size_t d = 1; d < t.dims.size() && !overflows; ++d)
      overflows = __builtin_mul_overflow(bytes, t.dims[d], &bytes);
    if (overflows)
      return format("%s: %s dims %s take more than 2^64 bytes", ctx.c_str(),
                    type, formatDims(t.dims).c_str());
    t.bytes = bytes;
    if (relative % out.alignment != 0)
      return format("%s: offset %llu is not a multiple of the alignment "
                    "(%llu)",
                    ctx.c_str(), ull(relative), ull(out.alignment));
    t.offset = relative; // made absolute below
    out.tensors.push_back(std::move(t));
  }
  out.tensorIndex = sortedIndex(out.tensors, nameOf);
  for (size_t k = 1; k < out.tensorIndex.size(); ++k) {
    const std::string &name = out.tensors[out.tensorIndex[k]].name;
    if (name == out.tensors[out.tensorIndex[k - 1]].name)
      return "tensor " + quote(name) + " appears twice";
  }

  // The data section starts at the next multiple of the alignment.
  uint64_t pad = (out.alignment - r.pos % out.alignment) % out.alignment;
  if (pad > r.left())
    return format("the data section starts at byte %llu, past the end of the "
                  "file (%llu bytes)",
                  ull(r.pos + pad), ull(size));
  out.dataOffset = r.pos + pad;
  uint64_t dataSize = size - out.dataOffset;
  for (TensorInfo &t : out.tensors) {
    if (t.offset > dataSize || t.bytes > dataSize - t.offset)
      return format("tensor %s: %llu bytes at data offset %llu run past the "
                    "end of the file (the data section has %llu bytes)",
                    quote(t.name).c_str(), ull(t.bytes), ull(t.offset),
                    ull(dataSize));
    t.offset += out.dataOffset;
  }

  // No two tensors may share bytes (empty ones hold none).
  std::vector<const TensorInfo *> byOffset;
  for (const TensorInfo &t : out.tensors)
    if (t.bytes)
      byOffset.push_back(&t);
  std::sort(byOffset.begin(), byOffset.end(),
            [](const TensorInfo *a, const TensorInfo *b) {
              if (a->offset != b->offset)
                return a->offset < b->offset;
              if (a->bytes != b->bytes)
                return a->bytes < b->bytes;
              return a->name < b->name;
            });
  for (size_t k = 1; k < byOffset.size(); ++k) {
    const TensorInfo &a = *byOffset[k - 1], &b = *byOffset[k];
    if (b.offset < a.offset + a.bytes) {
      uint64_t base = out.dataOffset;
      return format("tensors %s (data offsets [%llu, %llu)) and %s (data "
                    "offsets [%llu, %llu)) overlap",
                    quote(a.name).c_str(), ull(a.offset - base),
                    ull(a.offset - base + a.bytes), quote(b.name).c_str(),
                    ull(b.offset - base), ull(b.offset - base + b.bytes));
    }
  }
  return "";
}

} // namespace

std::string checkWeight(const File &file, const std::string &name,
                        uint32_t ggmlType, const std::vector<uint64_t> &shape,
                        uint64_t offset, uint64_t size) {
  // "NAME[E]": expert E of a stacked tensor (E: 1 to 9 decimal digits).
  std::string tensor = name;
  uint64_t expert = 0;
  bool slice = false;
  size_t open = name.rfind('[');
  if (open != std::string::npos && name.back() == ']') {
    std::string digits = name.substr(open + 1, name.size() - open - 2);
    slice = !digits.empty() && digits.size() <= 9 &&
            digits.find_first_not_of("0123456789") == std::string::npos;
    if (slice) {
      expert = std::stoull(digits);
      tensor = name.substr(0, open);
    }
  }
  const TensorInfo *t = file.findTensor(tensor);
  if (!t)
    return "tensor " + quote(tensor) + " is not in the file";
  if (t->type != ggmlType) {
    const char *have = typeName(t->type), *want = typeName(ggmlType);
    return format("tensor %s is %s in the file, but the model was compiled "
                  "for %s",
                  quote(tensor).c_str(), have ? have : "?", want ? want : "?");
  }
  std::vector<uint64_t> have = t->shape(), want = shape;
  uint64_t begin = t->offset, bytes = t->bytes;
  if (slice) {
    if (have.empty() || expert >= have[0])
      return format("tensor %s has shape %s in the file: it holds no expert "
                    "%llu",
                    quote(tensor).c_str(), formatDims(have).c_str(),
                    (unsigned long long)expert);
    // Whole blocks per expert: the stacked dimension is the outermost.
    bytes = t->bytes / have[0];
    begin += bytes * expert;
    have.erase(have.begin());
  }
  if (have != want)
    return format("tensor %s has shape %s in the file, but the model was "
                  "compiled for %s%s",
                  quote(tensor).c_str(), formatDims(have).c_str(),
                  formatDims(want).c_str(), slice ? " per expert" : "");
  if (begin != offset || bytes != size) {
    uint64_t wantEnd;
    if (__builtin_add_overflow(offset, size, &wantEnd))
      wantEnd = UINT64_MAX;
    return format("tensor %s is at bytes [%llu, %llu) in the file, but the "
                  "model was compiled for [%llu, %llu)",
                  quote(name).c_str(), (unsigned long long)begin,
                  (unsigned long long)(begin + bytes),
                  (unsigned long long)offset, (unsigned long long)wantEnd);
  }
  return "";
}

std::string parse(const unsigned char *data, uint64_t size, File &out) {
  File file;
  std::string error = parseInto(data, size, file);
  out = error.empty() ? std::move(file) : File();
  return error;
}

} // namespace gguf
} // namespace moert
