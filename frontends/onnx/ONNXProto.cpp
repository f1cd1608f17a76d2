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

/// Reads a message's fields to its end, each (field number, wire type)
/// through `field`, which reads or skips its value.
template <typename Field> Error readFields(Reader &r, Field field) {
  while (!r.done()) {
    uint32_t f, w;
    if (Error e = r.tag(f, w))
      return e;
    if (Error e = field(f, w))
      return e;
  }
  return Error::success();
}

Error parseEntry(Reader &r, StringStringEntryProto &m) {
  return readFields(r, [&](uint32_t f, uint32_t w) -> Error {
    return f == 1   ? readString(r, f, w, "StringStringEntryProto", m.key_)
           : f == 2 ? readString(r, f, w, "StringStringEntryProto", m.value_)
                    : r.skip(w);
  });
}

Error parseTensor(Reader &r, TensorProto &m) {
  constexpr StringRef kName = "TensorProto";
  return readFields(r, [&](uint32_t f, uint32_t w) -> Error {
    switch (f) {
    case 1:
      return readInts(r, f, w, kName, m.dims_);
    case 2:
      return readInt32(r, f, w, kName, m.data_type_);
    case 4:
      return readFloats(r, f, w, kName, m.float_data_);
    case 7:
      return readInts(r, f, w, kName, m.int64_data_);
    case 8:
      return readString(r, f, w, kName, m.name_);
    case 9:
      m.hasRawData = true;
      return readString(r, f, w, kName, m.raw_data_);
    case 13:
      m.external_data_.emplace_back();
      return readMessage(r, f, w, kName, m.external_data_.back(), parseEntry);
    case 14:
      return readInt32(r, f, w, kName, m.data_location_);
    default:
      return r.skip(w);
    }
  });
}

Error parseAttribute(Reader &r, AttributeProto &m) {
  constexpr StringRef kName = "AttributeProto";
  return readFields(r, [&](uint32_t f, uint32_t w) -> Error {
    switch (f) {
    case 1:
      return readString(r, f, w, kName, m.name_);
    case 2: {
      std::vector<float> one;
      if (Error e = r.expect(f, w, Fixed32, kName))
        return e;
      if (Error e = readFloats(r, f, w, kName, one))
        return e;
      m.f_ = one.back();
      return Error::success();
    }
    case 3:
      return readInt(r, f, w, kName, m.i_);
    case 4:
      return readString(r, f, w, kName, m.s_);
    case 5:
      return readMessage(r, f, w, kName, m.t_, parseTensor);
    case 8:
      return readInts(r, f, w, kName, m.ints_);
    case 20:
      return readInt32(r, f, w, kName, m.type_);
    default:
      // Subgraphs (g, graphs) and the rest: skipped, never recursed into.
      return r.skip(w);
    }
  });
}

Error parseNode(Reader &r, NodeProto &m) {
  constexpr StringRef kName = "NodeProto";
  return readFields(r, [&](uint32_t f, uint32_t w) -> Error {
    switch (f) {
    case 1:
      m.input_.emplace_back();
      return readString(r, f, w, kName, m.input_.back());
    case 2:
      m.output_.emplace_back();
      return readString(r, f, w, kName, m.output_.back());
    case 3:
      return readString(r, f, w, kName, m.name_);
    case 4:
      return readString(r, f, w, kName, m.op_type_);
    case 5:
      m.attribute_.emplace_back();
      return readMessage(r, f, w, kName, m.attribute_.back(), parseAttribute);
    case 7:
      return readString(r, f, w, kName, m.domain_);
    default:
      return r.skip(w);
    }
  });
}

Error parseValueInfo(Reader &r, ValueInfoProto &m) {
  return readFields(r, [&](uint32_t f, uint32_t w) -> Error {
    return f == 1 ? readString(r, f, w, "ValueInfoProto", m.name_) : r.skip(w);
  });
}

Error parseGraph(Reader &r, GraphProto &m) {
  constexpr StringRef kName = "GraphProto";
  return readFields(r, [&](uint32_t f, uint32_t w) -> Error {
    switch (f) {
    case 1:
      m.node_.emplace_back();
      return readMessage(r, f, w, kName, m.node_.back(), parseNode);
    case 5:
      m.initializer_.emplace_back();
      return readMessage(r, f, w, kName, m.initializer_.back(), parseTensor);
    case 11:
      m.input_.emplace_back();
      return readMessage(r, f, w, kName, m.input_.back(), parseValueInfo);
    case 12:
      m.output_.emplace_back();
      return readMessage(r, f, w, kName, m.output_.back(), parseValueInfo);
    case 15:
      ++m.sparseInitializers;
      return r.skip(w);
    default:
      return r.skip(w);
    }
  });
}

Error parseOpset(Reader &r, OperatorSetIdProto &m) {
  return readFields(r, [&](uint32_t f, uint32_t w) -> Error {
    return f == 1   ? readString(r, f, w, "OperatorSetIdProto", m.domain_)
           : f == 2 ? readInt(r, f, w, "OperatorSetIdProto", m.version_)
                    : r.skip(w);
  });
}

} // namespace

Error parseModel(StringRef bytes, ModelProto &m) {
  uint64_t budget = kMaxElements;
  Reader r(bytes.data(), bytes.data() + bytes.size(), bytes.data(), budget);
  constexpr StringRef kName = "ModelProto";
  return readFields(r, [&](uint32_t f, uint32_t w) -> Error {
    switch (f) {
    case 1:
      return readInt(r, f, w, kName, m.ir_version_);
    case 7:
      if (m.hasGraph)
        return r.fail("a second graph");
      m.hasGraph = true;
      return readMessage(r, f, w, kName, m.graph_, parseGraph);
    case 8:
      m.opset_import_.emplace_back();
      return readMessage(r, f, w, kName, m.opset_import_.back(), parseOpset);
    default:
      return r.skip(w);
    }
  });
}

} // namespace mlir::moe::onnxfe::wire
