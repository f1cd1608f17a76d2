//===- ONNXProto.cpp - the ONNX protobuf messages the importer reads -----===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/onnx/ONNXProto.h"

#include "llvm/Support/FormatVariadic.h"

#include <cstring>

using namespace llvm;

namespace mlir::moe::onnxfe::wire {

namespace {

enum Wire : uint32_t { Varint = 0, Fixed64 = 1, Bytes = 2, Fixed32 = 5 };

/// Reads one message's bytes [p, end); `base` is the file's first byte (for
/// offsets in messages), `budget` the elements left to decode.
class Reader {
public:
  Reader(const char *p, const char *end, const char *base, uint64_t &budget)
      : p(p), end(end), base(base), budget(budget) {}

  bool done() const { return p == end; }

  Error fail(const Twine &what) const {
    return createStringError(inconvertibleErrorCode(),
                             "malformed protobuf at byte " +
                                 Twine(uint64_t(p - base)) + ": " + what);
  }

  Error count() {
    if (budget == 0)
      return fail("more than " + Twine(kMaxElements) + " elements");
    --budget;
    return Error::success();
  }

  Error varint(uint64_t &v) {
    v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (p == end)
        return fail("a varint runs past the end of its message");
      uint8_t b = uint8_t(*p++);
      if (shift == 63 && b > 1)
        return fail("a varint longer than 64 bits");
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80))
        return Error::success();
    }
    return fail("a varint longer than 10 bytes");
  }

  Error tag(uint32_t &field, uint32_t &wire) {
    uint64_t t;
    if (Error e = varint(t))
      return e;
    field = uint32_t(t >> 3);
    wire = uint32_t(t & 7);
    if (t >> 32 || field == 0 || field > (1u << 29) - 1)
      return fail("field number " + Twine(t >> 3) + " is out of range");
    return Error::success();
  }

  Error bytes(StringRef &out) {
    uint64_t n;
    if (Error e = varint(n))
      return e;
    if (n > uint64_t(end - p))
      return fail("a length of " + Twine(n) +
                  " bytes runs past the end of its message");
    out = StringRef(p, size_t(n));
    p += n;
    return Error::success();
  }

  Error fixed(unsigned size, uint64_t &v) {
    if (uint64_t(end - p) < size)
      return fail("a fixed-size field runs past the end of its message");
    v = 0;
    std::memcpy(&v, p, size); // little-endian hosts only (as the runtime)
    p += size;
    return Error::success();
  }

  Error skip(uint32_t wire) {
    uint64_t v = 0;
    StringRef s;
    switch (wire) {
    case Varint:
      return varint(v);
    case Fixed64:
      return fixed(8, v);
    case Bytes:
      return bytes(s);
    case Fixed32:
      return fixed(4, v);
    default:
      return fail("wire type " + Twine(wire) +
                  " (groups are not used by ONNX) is not supported");
    }
  }

  Reader sub(StringRef s) const {
    return Reader(s.data(), s.data() + s.size(), base, budget);
  }

  /// A field's wire type must be `want`.
  Error expect(uint32_t field, uint32_t wire, uint32_t want,
               StringRef message) const {
    if (wire == want)
      return Error::success();
    return fail(formatv("field {0} of {1} has wire type {2}, expected {3}",
                        field, message, wire, want)
                    .str());
  }

  const char *p, *end, *base;
  uint64_t &budget;
};

Error readString(Reader &r, uint32_t field, uint32_t wire, StringRef message,
                 std::string &out) {
  StringRef s;
  if (Error e = r.expect(field, wire, Bytes, message))
    return e;
  if (Error e = r.bytes(s))
    return e;
  if (Error e = r.count())
    return e;
  out = s.str();
  return Error::success();
}

Error readInt(Reader &r, uint32_t field, uint32_t wire, StringRef message,
              int64_t &out) {
  uint64_t v = 0;
  if (Error e = r.expect(field, wire, Varint, message))
    return e;
  if (Error e = r.varint(v))
    return e;
  out = int64_t(v);
  return Error::success();
}

Error readInt32(Reader &r, uint32_t field, uint32_t wire, StringRef message,
                int32_t &out) {
  int64_t v;
  if (Error e = readInt(r, field, wire, message, v))
    return e;
  if (v < INT32_MIN || v > INT32_MAX)
    return r.fail("field " + Twine(field) + " of " + message +
                  " does not fit in int32");
  out = int32_t(v);
  return Error::success();
}

/// A repeated int64 field, packed or not.
Error readInts(Reader &r, uint32_t field, uint32_t wire, StringRef message,
               std::vector<int64_t> &out) {
  if (wire == Bytes) {
    StringRef s;
    if (Error e = r.bytes(s))
      return e;
    Reader packed = r.sub(s);
    while (!packed.done()) {
      uint64_t v = 0;
      if (Error e = packed.varint(v))
        return e;
      if (Error e = packed.count())
        return e;
      out.push_back(int64_t(v));
    }
    return Error::success();
  }
  int64_t v;
  if (Error e = readInt(r, field, wire, message, v))
    return e;
  if (Error e = r.count())
    return e;
  out.push_back(v);
  return Error::success();
}

/// A repeated float field, packed or not.
Error readFloats(Reader &r, uint32_t field, uint32_t wire, StringRef message,
                 std::vector<float> &out) {
  auto push = [&](uint64_t bits) {
    float f;
    uint32_t b = uint32_t(bits);
    std::memcpy(&f, &b, 4);
    out.push_back(f);
  };
  if (wire == Bytes) {
    StringRef s;
    if (Error e = r.bytes(s))
      return e;
    if (s.size() % 4)
      return r.fail("packed floats of " + message + " are not whole floats");
    Reader packed = r.sub(s);
    while (!packed.done()) {
      uint64_t v = 0;
      if (Error e = packed.fixed(4, v))
        return e;
      if (Error e = packed.count())
        return e;
      push(v);
    }
    return Error::success();
  }
  uint64_t v = 0;
  if (Error e = r.expect(field, wire, Fixed32, message))
    return e;
  if (Error e = r.fixed(4, v))
    return e;
  if (Error e = r.count())
    return e;
  push(v);
  return Error::success();
}

/// Reads the embedded message in field `field` with `parse`.
template <typename T, typename F>
Error readMessage(Reader &r, uint32_t field, uint32_t wire, StringRef message,
                  T &out, F parse) {
  StringRef s;
  if (Error e = r.expect(field, wire, Bytes, message))
    return e;
  if (Error e = r.bytes(s))
    return e;
  if (Error e = r.count())
    return e;
  Reader sub = r.sub(s);
  return parse(sub, out);
}

Error parseEntry(Reader &r, StringStringEntryProto &m) {
  while (!r.done()) {
    uint32_t f, w;
    if (Error e = r.tag(f, w))
      return e;
    Error e = f == 1   ? readString(r, f, w, "StringStringEntryProto", m.key_)
              : f == 2 ? readString(r, f, w, "StringStringEntryProto", m.value_)
                       : r.skip(w);
    if (e)
      return e;
  }
  return Error::success();
}

Error parseTensor(Reader &r, TensorProto &m) {
  constexpr StringRef kName = "TensorProto";
  while (!r.done()) {
    uint32_t f, w;
    if (Error e = r.tag(f, w))
      return e;
    Error e = Error::success();
    switch (f) {
    case 1:
      e = readInts(r, f, w, kName, m.dims_);
      break;
    case 2:
      e = readInt32(r, f, w, kName, m.data_type_);
      break;
    case 4:
      e = readFloats(r, f, w, kName, m.float_data_);
      break;
    case 7:
      e = readInts(r, f, w, kName, m.int64_data_);
      break;
    case 8:
      e = readString(r, f, w, kName, m.name_);
      break;
    case 9:
      m.hasRawData = true;
      e = readString(r, f, w, kName, m.raw_data_);
      break;
    case 13:
      m.external_data_.emplace_back();
      e = readMessage(r, f, w, kName, m.external_data_.back(), parseEntry);
      break;
    case 14:
      e = readInt32(r, f, w, kName, m.data_location_);
      break;
    default:
      e = r.skip(w);
    }
    if (e)
      return e;
  }
  return Error::success();
}

Error parseAttribute(Reader &r, AttributeProto &m) {
  constexpr StringRef kName = "AttributeProto";
  while (!r.done()) {
    uint32_t f, w;
    if (Error e = r.tag(f, w))
      return e;
    Error e = Error::success();
    switch (f) {
    case 1:
      e = readString(r, f, w, kName, m.name_);
      break;
    case 2: {
      std::vector<float> one;
      if (!(e = r.expect(f, w, Fixed32, kName)))
        e = readFloats(r, f, w, kName, one);
      if (!e)
        m.f_ = one.back();
      break;
    }
    case 3:
      e = readInt(r, f, w, kName, m.i_);
      break;
    case 4:
      e = readString(r, f, w, kName, m.s_);
      break;
    case 5:
      e = readMessage(r, f, w, kName, m.t_, parseTensor);
      break;
    case 8:
      e = readInts(r, f, w, kName, m.ints_);
      break;
    case 20:
      e = readInt32(r, f, w, kName, m.type_);
      break;
    default:
      // Subgraphs (g, graphs) and the rest: skipped, never recursed into.
      e = r.skip(w);
    }
    if (e)
      return e;
  }
  return Error::success();
}

Error parseNode(Reader &r, NodeProto &m) {
  constexpr StringRef kName = "NodeProto";
  while (!r.done()) {
    uint32_t f, w;
    if (Error e = r.tag(f, w))
      return e;
    Error e = Error::success();
    switch (f) {
    case 1:
      m.input_.emplace_back();
      e = readString(r, f, w, kName, m.input_.back());
      break;
    case 2:
      m.output_.emplace_back();
      e = readString(r, f, w, kName, m.output_.back());
      break;
    case 3:
      e = readString(r, f, w, kName, m.name_);
      break;
    case 4:
      e = readString(r, f, w, kName, m.op_type_);
      break;
    case 5:
      m.attribute_.emplace_back();
      e = readMessage(r, f, w, kName, m.attribute_.back(), parseAttribute);
      break;
    case 7:
      e = readString(r, f, w, kName, m.domain_);
      break;
    default:
      e = r.skip(w);
    }
    if (e)
      return e;
  }
  return Error::success();
}

Error parseValueInfo(Reader &r, ValueInfoProto &m) {
  while (!r.done()) {
    uint32_t f, w;
    if (Error e = r.tag(f, w))
      return e;
    Error e =
        f == 1 ? readString(r, f, w, "ValueInfoProto", m.name_) : r.skip(w);
    if (e)
      return e;
  }
  return Error::success();
}

Error parseGraph(Reader &r, GraphProto &m) {
  constexpr StringRef kName = "GraphProto";
  while (!r.done()) {
    uint32_t f, w;
    if (Error e = r.tag(f, w))
      return e;
    Error e = Error::success();
    switch (f) {
    case 1:
      m.node_.emplace_back();
      e = readMessage(r, f, w, kName, m.node_.back(), parseNode);
      break;
    case 5:
      m.initializer_.emplace_back();
      e = readMessage(r, f, w, kName, m.initializer_.back(), parseTensor);
      break;
    case 11:
      m.input_.emplace_back();
      e = readMessage(r, f, w, kName, m.input_.back(), parseValueInfo);
      break;
    case 12:
      m.output_.emplace_back();
      e = readMessage(r, f, w, kName, m.output_.back(), parseValueInfo);
      break;
    case 15:
      ++m.sparseInitializers;
      e = r.skip(w);
      break;
    default:
      e = r.skip(w);
    }
    if (e)
      return e;
  }
  return Error::success();
}

Error parseOpset(Reader &r, OperatorSetIdProto &m) {
  while (!r.done()) {
    uint32_t f, w;
    if (Error e = r.tag(f, w))
      return e;
    Error e = f == 1   ? readString(r, f, w, "OperatorSetIdProto", m.domain_)
              : f == 2 ? readInt(r, f, w, "OperatorSetIdProto", m.version_)
                       : r.skip(w);
    if (e)
      return e;
  }
  return Error::success();
}

} // namespace

Error parseModel(StringRef bytes, ModelProto &m) {
  uint64_t budget = kMaxElements;
  Reader r(bytes.data(), bytes.data() + bytes.size(), bytes.data(), budget);
  constexpr StringRef kName = "ModelProto";
  while (!r.done()) {
    uint32_t f, w;
    if (Error e = r.tag(f, w))
      return e;
    Error e = Error::success();
    switch (f) {
    case 1:
      e = readInt(r, f, w, kName, m.ir_version_);
      break;
    case 7:
      if (m.hasGraph)
        return r.fail("a second graph");
      m.hasGraph = true;
      e = readMessage(r, f, w, kName, m.graph_, parseGraph);
      break;
    case 8:
      m.opset_import_.emplace_back();
      e = readMessage(r, f, w, kName, m.opset_import_.back(), parseOpset);
      break;
    default:
      e = r.skip(w);
    }
    if (e)
      return e;
  }
  return Error::success();
}

} // namespace mlir::moe::onnxfe::wire
