//===- ONNXEval.cpp - a bounded evaluator of small ONNX subgraphs ---------===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/onnx/ONNXEval.h"

#include "frontends/InputFiles.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstring>
#include <limits>

using namespace llvm;

namespace mlir::moe::onnxfe {

namespace {

Error plainError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

double halfToDouble(uint16_t h) {
  int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0)
    v = std::ldexp(double(mant), -24);
  else if (exp == 31)
    v = mant ? std::numeric_limits<double>::quiet_NaN()
             : std::numeric_limits<double>::infinity();
  else
    v = std::ldexp(double(mant | 0x400), exp - 25);
  return sign ? -v : v;
}

/// The elements of `shape`, or std::nullopt past `limit` (or negative).
std::optional<int64_t> elementsOf(ArrayRef<int64_t> shape, int64_t limit) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d && n > limit / d))
      return std::nullopt;
    n *= d;
  }
  if (n > limit)
    return std::nullopt;
  return n;
}

/// Row-major strides of `shape`, zero where a dimension of `shape`
/// broadcasts (size 1) into `out`; `shape` aligned to the right of `out`.
SmallVector<int64_t, 6> broadcastStrides(ArrayRef<int64_t> shape,
                                         ArrayRef<int64_t> out) {
  SmallVector<int64_t, 6> strides(out.size(), 0);
  int64_t s = 1;
  for (int i = int(shape.size()) - 1, o = int(out.size()) - 1; i >= 0;
       --i, --o) {
    strides[o] = shape[i] == 1 && out[o] != 1 ? 0 : s;
    s *= shape[i];
  }
  return strides;
}

/// Calls f(outIndex, inputOffsets) over `out`'s elements.
template <typename F>
void forEachBroadcast(ArrayRef<int64_t> out,
                      ArrayRef<SmallVector<int64_t, 6>> strides, F f) {
  int64_t n = 1;
  for (int64_t d : out)
    n *= d;
  SmallVector<int64_t, 6> idx(out.size(), 0);
  SmallVector<int64_t, 4> offs(strides.size(), 0);
  for (int64_t e = 0; e < n; ++e) {
    f(e, ArrayRef<int64_t>(offs));
    for (int d = int(out.size()) - 1; d >= 0; --d) {
      ++idx[d];
      for (size_t k = 0; k < strides.size(); ++k)
        offs[k] += strides[k][d];
      if (idx[d] < out[d])
        break;
      for (size_t k = 0; k < strides.size(); ++k)
        offs[k] -= strides[k][d] * out[d];
      idx[d] = 0;
    }
  }
}

int64_t normAxis(int64_t axis, int64_t rank) {
  return axis < 0 ? axis + rank : axis;
}

/// Appends to `r` (its shape set) `a`'s element at base + sum of idx[d] *
/// strides[d] for each index idx of r's shape, in row-major order.
void gatherStrided(const EvalTensor &a, EvalTensor &r, int64_t base,
                   const SmallVector<int64_t, 6> &strides) {
  forEachBroadcast(r.shape, strides, [&](int64_t, ArrayRef<int64_t> offs) {
    if (a.kind == EvalTensor::Float)
      r.floats.push_back(a.floats[base + offs[0]]);
    else
      r.ints.push_back(a.ints[base + offs[0]]);
  });
}

} // namespace

Expected<EvalTensor> tensorValue(const wire::TensorProto &t,
                                 int64_t maxElements) {
  EvalTensor out;
  auto fail = [&](const Twine &why) {
    return plainError("tensor '" + printableText(t.name()) + "' " + why);
  };
  if (t.data_location() == wire::TensorProto::EXTERNAL)
    return fail("is external data, not a constant of the graph");
  std::optional<int64_t> n = elementsOf(t.dims(), maxElements);
  if (!n)
    return fail("is too large to evaluate");
  out.shape.assign(t.dims().begin(), t.dims().end());
  const std::string &raw = t.raw_data();
  auto need = [&](size_t bytes) -> Error {
    if (raw.size() != size_t(*n) * bytes)
      return fail("has " + Twine(raw.size()) + " bytes of raw data for " +
                  Twine(*n) + " elements");
    return Error::success();
  };
  switch (t.data_type()) {
  case wire::TensorProto::INT64:
    out.kind = EvalTensor::Int;
    if (t.has_raw_data()) {
      if (Error e = need(8))
        return std::move(e);
      out.ints.resize(*n);
      std::memcpy(out.ints.data(), raw.data(), raw.size());
    } else {
      out.ints = t.int64_data();
    }
    break;
  case wire::TensorProto::INT32:
    out.kind = EvalTensor::Int;
    if (Error e = need(4))
      return std::move(e);
    out.ints.resize(*n);
    for (int64_t i = 0; i < *n; ++i) {
      int32_t v;
      std::memcpy(&v, raw.data() + 4 * i, 4);
      out.ints[i] = v;
    }
    break;
  case 9: // BOOL
    out.kind = EvalTensor::Bool;
    if (Error e = need(1))
      return std::move(e);
    out.ints.resize(*n);
    for (int64_t i = 0; i < *n; ++i)
      out.ints[i] = raw[i] != 0;
    break;
  case wire::TensorProto::FLOAT:
    out.kind = EvalTensor::Float;
    if (t.has_raw_data()) {
      if (Error e = need(4))
        return std::move(e);
      out.floats.resize(*n);
      for (int64_t i = 0; i < *n; ++i) {
        float v;
        std::memcpy(&v, raw.data() + 4 * i, 4);
        out.floats[i] = v;
      }
    } else {
      out.floats.assign(t.float_data().begin(), t.float_data().end());
    }
    break;
  case wire::TensorProto::FLOAT16:
    out.kind = EvalTensor::Float;
    if (Error e = need(2))
      return std::move(e);
    out.floats.resize(*n);
    for (int64_t i = 0; i < *n; ++i) {
      uint16_t v;
      std::memcpy(&v, raw.data() + 2 * i, 2);
      out.floats[i] = halfToDouble(v);
    }
    break;
  case wire::TensorProto::DOUBLE:
    out.kind = EvalTensor::Float;
    if (Error e = need(8))
      return std::move(e);
    out.floats.resize(*n);
    std::memcpy(out.floats.data(), raw.data(), raw.size());
    break;
  default:
    return fail("has element type " + Twine(t.data_type()) +
                ", which the evaluator does not read");
  }
  size_t have =
      out.kind == EvalTensor::Float ? out.floats.size() : out.ints.size();
  if (int64_t(have) != *n)
    return fail("has " + Twine(have) + " values for " + Twine(*n) +
                " elements");
  return out;
}

Expected<const EvalTensor *> Evaluator::eval(StringRef value) {
  return evalAt(value, 0);
}

Expected<const EvalTensor *> Evaluator::evalAt(StringRef value, int depth) {
  auto it = cache.find(value);
  if (it != cache.end())
    return it->second.get();
  Expected<std::optional<EvalTensor>> leaf = hooks.leaf(value);
  if (!leaf)
    return leaf.takeError();
  if (*leaf) {
    leafNames[value] = true;
    if ((totalElements += (*leaf)->numel()) > kMaxTotalElements)
      return hooks.fileError("the constants read by a subgraph evaluated for "
                             "sample sequence lengths are too large");
    auto &slot = cache[value];
    slot = std::make_unique<EvalTensor>(std::move(**leaf));
    return slot.get();
  }
  const wire::NodeProto *n = hooks.producer(value);
  if (!n)
    return hooks.fileError("value '" + printableText(value) +
                           "' is neither computed by a node nor a constant "
                           "(a subgraph evaluated for sample sequence "
                           "lengths reads it)");
  if (depth > kMaxDepth)
    return hooks.nodeError(*n, "is nested more than " + Twine(kMaxDepth) +
                                   " nodes deep in a subgraph evaluated for "
                                   "sample sequence lengths");
  if (inProgress.lookup(value))
    return hooks.nodeError(*n, "is part of a cycle");
  if (++nodes > kMaxNodes)
    return hooks.nodeError(*n, "the subgraph evaluated for sample sequence "
                               "lengths has more than " +
                                   Twine(kMaxNodes) + " nodes");
  inProgress[value] = true;
  std::vector<const EvalTensor *> inputs;
  bool isShape = n->op_type() == "Shape";
  for (int i = 0; i < n->input_size(); ++i) {
    StringRef in = n->input(i);
    if (in.empty()) {
      inputs.push_back(nullptr);
      continue;
    }
    if (isShape && i == 0 && !cache.count(in)) {
      // Shape of an activation whose shape is known: a shape without
      // values, kept apart from the cache (a node reading the activation
      // itself must not find it there).
      if (std::optional<SmallVector<int64_t, 4>> s = hooks.shapeOf(in)) {
        auto &slot = shapesOnly[in];
        if (!slot) {
          slot = std::make_unique<EvalTensor>();
          slot->shape = *s;
        }
        inputs.push_back(slot.get());
        continue;
      }
    }
    Expected<const EvalTensor *> v = evalAt(in, depth + 1);
    if (!v) {
      inProgress[value] = false;
      return v.takeError();
    }
    inputs.push_back(*v);
  }
  inProgress[value] = false;
  Expected<std::vector<EvalTensor>> outs = run(*n, inputs);
  if (!outs)
    return outs.takeError();
  visitedNodes.insert(n);
  for (size_t i = 0; i < outs->size() && i < size_t(n->output_size()); ++i) {
    EvalTensor &t = (*outs)[i];
    int64_t numel = t.numel();
    if (numel > kMaxTensorElements ||
        (totalElements += numel) > kMaxTotalElements)
      return hooks.nodeError(*n, "evaluating it for sample sequence lengths "
                                 "takes more than the evaluator's bound of "
                                 "elements");
    if (!n->output(i).empty())
      cache[n->output(i)] = std::make_unique<EvalTensor>(std::move(t));
  }
  auto found = cache.find(value);
  if (found == cache.end())
    return hooks.nodeError(*n,
                           "does not produce '" + printableText(value) + "'");
  return found->second.get();
}

Expected<std::vector<EvalTensor>>
Evaluator::run(const wire::NodeProto &n, std::vector<const EvalTensor *> &in) {
  StringRef op = n.op_type();
  if (!n.domain().empty() && n.domain() != "ai.onnx")
    return hooks.nodeError(n, "is not an op the evaluator of sequence-length "
                              "subgraphs runs");
  auto fail = [&](const Twine &why) { return hooks.nodeError(n, why); };
  auto attrInt = [&](StringRef name, int64_t dflt) {
    for (const wire::AttributeProto &a : n.attribute())
      if (a.name() == name && a.type() == wire::AttributeProto::INT)
        return a.i();
    return dflt;
  };
  auto attrInts =
      [&](StringRef name) -> std::optional<SmallVector<int64_t, 6>> {
    for (const wire::AttributeProto &a : n.attribute())
      if (a.name() == name && a.type() == wire::AttributeProto::INTS) {
        SmallVector<int64_t, 6> v;
        for (int k = 0; k < a.ints_size(); ++k)
          v.push_back(a.ints(k));
        return v;
      }
    return std::nullopt;
  };
  auto needInputs = [&](size_t k) -> Error {
    if (in.size() < k ||
        llvm::any_of(ArrayRef(in).take_front(k), [](auto *p) { return !p; }))
      return fail("expects " + Twine(k) + " inputs");
    return Error::success();
  };
  auto intsOf = [&](const EvalTensor *t,
                    StringRef what) -> Expected<std::vector<int64_t>> {
    if (!t || t->kind != EvalTensor::Int || t->shape.size() > 1)
      return fail(what + " must be an integer vector");
    return t->ints;
  };
  auto checkShape = [&](ArrayRef<int64_t> s) -> Error {
    if (!elementsOf(s, kMaxTensorElements))
      return fail("its result would have shape with more than " +
                  Twine(kMaxTensorElements) +
                  " elements (or a negative dimension)");
    return Error::success();
  };
  std::vector<EvalTensor> outs(1);
  EvalTensor &r = outs[0];

  // Elementwise ops, with broadcasting.
  static const StringRef binary[] = {"Add",     "Sub",         "Mul",
                                     "Div",     "Equal",       "Less",
                                     "Greater", "LessOrEqual", "GreaterOrEqual",
                                     "And",     "Or",          "Max",
                                     "Min"};
  if (llvm::is_contained(binary, op) || op == "Where") {
    size_t k = op == "Where" ? 3 : 2;
    if (Error e = needInputs(k))
      return std::move(e);
    if (in.size() != k)
      return fail("expects " + Twine(k) + " inputs");
    SmallVector<int64_t, 6> shape;
    for (const EvalTensor *t : in) {
      if (t->shape.size() > shape.size())
        shape.insert(shape.begin(), t->shape.size() - shape.size(), 1);
      for (int i = int(t->shape.size()) - 1, o = int(shape.size()) - 1; i >= 0;
           --i, --o) {
        int64_t d = t->shape[i];
        if (shape[o] == 1)
          shape[o] = d;
        else if (d != 1 && d != shape[o])
          return fail("its inputs' shapes do not broadcast");
      }
    }
    if (Error e = checkShape(shape))
      return std::move(e);
    SmallVector<SmallVector<int64_t, 6>, 3> strides;
    for (const EvalTensor *t : in)
      strides.push_back(broadcastStrides(t->shape, shape));
    r.shape.assign(shape.begin(), shape.end());
    int64_t numel = r.numel();
    const EvalTensor *a = in[0], *b = in[1];
    if (op == "Where") {
      const EvalTensor *c = in[0], *x = in[1], *y = in[2];
      if (c->kind != EvalTensor::Bool || x->kind != y->kind)
        return fail("expects a bool condition and two values of one type");
      r.kind = x->kind;
      if (r.kind == EvalTensor::Float)
        r.floats.resize(numel);
      else
        r.ints.resize(numel);
      forEachBroadcast(shape, strides, [&](int64_t e, ArrayRef<int64_t> o) {
        const EvalTensor *s = c->ints[o[0]] ? x : y;
        int64_t off = c->ints[o[0]] ? o[1] : o[2];
        if (r.kind == EvalTensor::Float)
          r.floats[e] = s->floats[off];
        else
          r.ints[e] = s->ints[off];
      });
      return outs;
    }
    bool logical = op == "And" || op == "Or";
    bool compare = op == "Equal" || op == "Less" || op == "Greater" ||
                   op == "LessOrEqual" || op == "GreaterOrEqual";
    if (a->kind != b->kind)
      return fail("its inputs have different element types");
    if (logical && a->kind != EvalTensor::Bool)
      return fail("expects bool inputs");
    if (!logical && !compare && a->kind == EvalTensor::Bool)
      return fail("expects numeric inputs");
    bool isFloat = a->kind == EvalTensor::Float;
    r.kind = (logical || compare) ? EvalTensor::Bool : a->kind;
    if (r.kind == EvalTensor::Float)
      r.floats.resize(numel);
    else
      r.ints.resize(numel);
    bool overflow = false, divZero = false;
    forEachBroadcast(shape, strides, [&](int64_t e, ArrayRef<int64_t> o) {
      if (isFloat) {
        double x = a->floats[o[0]], y = b->floats[o[1]];
        if (compare) {
          r.ints[e] = op == "Equal"         ? x == y
                      : op == "Less"        ? x < y
                      : op == "Greater"     ? x > y
                      : op == "LessOrEqual" ? x <= y
                                            : x >= y;
          return;
        }
        r.floats[e] = op == "Add"   ? x + y
                      : op == "Sub" ? x - y
                      : op == "Mul" ? x * y
                      : op == "Div" ? x / y
                      : op == "Max" ? std::max(x, y)
                                    : std::min(x, y);
        return;
      }
      int64_t x = a->ints[o[0]], y = b->ints[o[1]], v = 0;
      if (logical) {
        r.ints[e] = op == "And" ? (x && y) : (x || y);
        return;
      }
      if (compare) {
        r.ints[e] = op == "Equal"         ? x == y
                    : op == "Less"        ? x < y
                    : op == "Greater"     ? x > y
                    : op == "LessOrEqual" ? x <= y
                                          : x >= y;
        return;
      }
      if (op == "Add")
        overflow |= __builtin_add_overflow(x, y, &v);
      else if (op == "Sub")
        overflow |= __builtin_sub_overflow(x, y, &v);
      else if (op == "Mul")
        overflow |= __builtin_mul_overflow(x, y, &v);
      else if (op == "Div") {
        if (y == 0 || (x == INT64_MIN && y == -1))
          divZero = true;
        else
          v = x / y;
      } else
        v = op == "Max" ? std::max(x, y) : std::min(x, y);
      r.ints[e] = v;
    });
    if (overflow)
      return fail("overflows int64 when evaluated for sample sequence "
                  "lengths");
    if (divZero)
      return fail("divides by zero when evaluated for sample sequence "
                  "lengths");
    return outs;
  }

  static const StringRef unary[] = {"Not",  "Neg",      "Cos",  "Sin",
                                    "Cast", "Identity", "Sqrt", "Reciprocal"};
  if (llvm::is_contained(unary, op)) {
    if (Error e = needInputs(1))
      return std::move(e);
    const EvalTensor *a = in[0];
    r = *a;
    int64_t numel = a->numel();
    if (op == "Identity")
      return outs;
    if (op == "Not") {
      if (a->kind != EvalTensor::Bool)
        return fail("expects a bool input");
      for (int64_t &v : r.ints)
        v = !v;
      return outs;
    }
    if (op == "Neg") {
      if (a->kind == EvalTensor::Float) {
        for (double &v : r.floats)
          v = -v;
        return outs;
      }
      for (int64_t &v : r.ints) {
        if (v == INT64_MIN || a->kind == EvalTensor::Bool)
          return fail("cannot negate its input");
        v = -v;
      }
      return outs;
    }
    if (op == "Cast") {
      int64_t to = attrInt("to", 0);
      if (to == 1 || to == 10 || to == 11 || to == 16) {
        r.kind = EvalTensor::Float;
        r.floats.resize(numel);
        for (int64_t i = 0; i < numel; ++i) {
          double v = a->number(i);
          r.floats[i] = to == 1 ? double(float(v)) : v;
        }
        r.ints.clear();
        return outs;
      }
      if (to == 6 || to == 7 || to == 9) {
        r.kind = to == 9 ? EvalTensor::Bool : EvalTensor::Int;
        r.ints.resize(numel);
        for (int64_t i = 0; i < numel; ++i) {
          if (a->kind == EvalTensor::Float) {
            double v = a->floats[i];
            if (to == 9) {
              r.ints[i] = v != 0;
              continue;
            }
            if (!(v > -9.2e18 && v < 9.2e18))
              return fail("casts a value out of the integer range");
            r.ints[i] = int64_t(v);
          } else {
            r.ints[i] = to == 9 ? a->ints[i] != 0 : a->ints[i];
          }
          if (to == 6)
            r.ints[i] = int32_t(uint32_t(uint64_t(r.ints[i])));
        }
        r.floats.clear();
        return outs;
      }
      return fail("casts to element type " + Twine(to) +
                  ", which the evaluator does not run");
    }
    if (a->kind != EvalTensor::Float)
      return fail("expects a float input");
    for (double &v : r.floats)
      v = op == "Cos"    ? std::cos(v)
          : op == "Sin"  ? std::sin(v)
          : op == "Sqrt" ? std::sqrt(v)
                         : 1.0 / v;
    return outs;
  }

  if (op == "Shape") {
    if (Error e = needInputs(1))
      return std::move(e);
    int64_t rank = int64_t(in[0]->shape.size());
    int64_t start = attrInt("start", 0), end = attrInt("end", rank);
    start = std::clamp(normAxis(start, rank), int64_t(0), rank);
    end = std::clamp(normAxis(end, rank), int64_t(0), rank);
    r.kind = EvalTensor::Int;
    for (int64_t i = start; i < end; ++i)
      r.ints.push_back(in[0]->shape[i]);
    r.shape = {int64_t(r.ints.size())};
    return outs;
  }

  if (op == "Range") {
    if (Error e = needInputs(3))
      return std::move(e);
    for (const EvalTensor *t : in)
      if (t->numel() != 1)
        return fail("expects scalar start, limit and delta");
    if (in[0]->kind == EvalTensor::Float) {
      double s = in[0]->number(0), l = in[1]->number(0), d = in[2]->number(0);
      double count = std::ceil((l - s) / d);
      if (!(count < double(kMaxTensorElements)))
        return fail("would produce more than " + Twine(kMaxTensorElements) +
                    " elements");
      r.kind = EvalTensor::Float;
      for (int64_t i = 0; i < int64_t(std::max(count, 0.0)); ++i)
        r.floats.push_back(s + double(i) * d);
      r.shape = {int64_t(r.floats.size())};
      return outs;
    }
    int64_t s = in[0]->ints[0], l = in[1]->ints[0], d = in[2]->ints[0];
    if (d == 0)
      return fail("has delta 0");
    double count = std::ceil((double(l) - double(s)) / double(d));
    if (!(count < double(kMaxTensorElements)))
      return fail("would produce more than " + Twine(kMaxTensorElements) +
                  " elements");
    r.kind = EvalTensor::Int;
    for (int64_t i = 0; i < int64_t(std::max(count, 0.0)); ++i) {
      int64_t v;
      if (__builtin_mul_overflow(i, d, &v) || __builtin_add_overflow(s, v, &v))
        return fail("overflows int64");
      r.ints.push_back(v);
    }
    r.shape = {int64_t(r.ints.size())};
    return outs;
  }

  if (op == "Unsqueeze" || op == "Squeeze") {
    if (in.empty() || !in[0])
      return fail("expects an input");
    std::vector<int64_t> axes;
    if (in.size() > 1 && in[1]) {
      Expected<std::vector<int64_t>> v = intsOf(in[1], "axes");
      if (!v)
        return v.takeError();
      axes = *v;
    }
    r = *in[0];
    if (op == "Squeeze") {
      int64_t rank = int64_t(r.shape.size());
      SmallVector<int64_t, 4> shape;
      for (int64_t &a : axes)
        a = normAxis(a, rank);
      for (int64_t i = 0; i < rank; ++i) {
        bool drop =
            axes.empty() ? r.shape[i] == 1 : llvm::is_contained(axes, i);
        if (drop && r.shape[i] != 1)
          return fail("squeezes a dimension that is not 1");
        if (!drop)
          shape.push_back(r.shape[i]);
      }
      r.shape = shape;
      return outs;
    }
    int64_t rank = int64_t(r.shape.size() + axes.size());
    for (int64_t &a : axes) {
      a = normAxis(a, rank);
      if (a < 0 || a >= rank)
        return fail("has an axis out of range");
    }
    llvm::sort(axes);
    for (int64_t a : axes)
      r.shape.insert(r.shape.begin() + a, 1);
    return outs;
  }

  if (op == "Reshape") {
    if (Error e = needInputs(2))
      return std::move(e);
    Expected<std::vector<int64_t>> shape = intsOf(in[1], "the shape");
    if (!shape)
      return shape.takeError();
    bool allowZero = attrInt("allowzero", 0);
    int64_t numel = in[0]->numel(), known = 1;
    int infer = -1;
    SmallVector<int64_t, 4> s(shape->begin(), shape->end());
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == 0 && !allowZero) {
        if (i >= in[0]->shape.size())
          return fail("copies a dimension its input does not have");
        s[i] = in[0]->shape[i];
      }
      if (s[i] == -1) {
        if (infer >= 0)
          return fail("has two -1 dimensions");
        infer = int(i);
        continue;
      }
      if (s[i] < 0 || (s[i] && known > kMaxTensorElements / s[i] + 1))
        return fail("has a bad shape");
      known *= s[i];
    }
    if (infer >= 0) {
      if (known == 0 || numel % known)
        return fail("cannot infer its -1 dimension");
      s[infer] = numel / known;
    } else if (known != numel) {
      return fail("changes the number of elements");
    }
    r = *in[0];
    r.shape = s;
    return outs;
  }

  if (op == "Expand") {
    if (Error e = needInputs(2))
      return std::move(e);
    Expected<std::vector<int64_t>> target = intsOf(in[1], "the shape");
    if (!target)
      return target.takeError();
    const EvalTensor *a = in[0];
    size_t rank = std::max(a->shape.size(), target->size());
    SmallVector<int64_t, 6> shape(rank, 1);
    for (size_t k = 0; k < rank; ++k) {
      int64_t x = k + a->shape.size() >= rank
                      ? a->shape[k + a->shape.size() - rank]
                      : 1;
      int64_t y =
          k + target->size() >= rank ? (*target)[k + target->size() - rank] : 1;
      if (x != 1 && y != 1 && x != y)
        return fail("its shape does not broadcast");
      shape[k] = x == 1 ? y : x;
    }
    if (Error e = checkShape(shape))
      return std::move(e);
    SmallVector<SmallVector<int64_t, 6>, 1> strides = {
        broadcastStrides(a->shape, shape)};
    r.kind = a->kind;
    r.shape.assign(shape.begin(), shape.end());
    int64_t numel = r.numel();
    if (a->kind == EvalTensor::Float)
      r.floats.resize(numel);
    else
      r.ints.resize(numel);
    forEachBroadcast(shape, strides, [&](int64_t e, ArrayRef<int64_t> o) {
      if (a->kind == EvalTensor::Float)
        r.floats[e] = a->floats[o[0]];
      else
        r.ints[e] = a->ints[o[0]];
    });
    return outs;
  }

  if (op == "Concat") {
    if (in.empty() || llvm::any_of(in, [](auto *p) { return !p; }))
      return fail("expects inputs");
    int64_t rank = int64_t(in[0]->shape.size());
    int64_t axis = normAxis(attrInt("axis", 0), rank);
    if (axis < 0 || axis >= rank)
      return fail("has an axis out of range");
    SmallVector<int64_t, 4> shape(in[0]->shape);
    shape[axis] = 0;
    for (const EvalTensor *t : in) {
      if (int64_t(t->shape.size()) != rank || t->kind != in[0]->kind)
        return fail("its inputs differ in rank or element type");
      for (int64_t d = 0; d < rank; ++d)
        if (d != axis && t->shape[d] != in[0]->shape[d])
          return fail("its inputs' shapes differ off the axis");
      if (__builtin_add_overflow(shape[axis], t->shape[axis], &shape[axis]))
        return fail("its result's shape overflows");
    }
    if (Error e = checkShape(shape))
      return std::move(e);
    int64_t outer = 1;
    for (int64_t d = 0; d < axis; ++d)
      outer *= shape[d];
    r.kind = in[0]->kind;
    r.shape = shape;
    for (int64_t o = 0; o < outer; ++o)
      for (const EvalTensor *t : in) {
        int64_t chunk = outer ? t->numel() / std::max<int64_t>(outer, 1) : 0;
        if (t->kind == EvalTensor::Float)
          r.floats.insert(r.floats.end(), t->floats.begin() + o * chunk,
                          t->floats.begin() + (o + 1) * chunk);
        else
          r.ints.insert(r.ints.end(), t->ints.begin() + o * chunk,
                        t->ints.begin() + (o + 1) * chunk);
      }
    return outs;
  }

  if (op == "Slice") {
    if (Error e = needInputs(3))
      return std::move(e);
    const EvalTensor *a = in[0];
    int64_t rank = int64_t(a->shape.size());
    Expected<std::vector<int64_t>> starts = intsOf(in[1], "starts"),
                                   ends = intsOf(in[2], "ends");
    if (!starts)
      return starts.takeError();
    if (!ends)
      return ends.takeError();
    std::vector<int64_t> axes, steps;
    if (in.size() > 3 && in[3]) {
      Expected<std::vector<int64_t>> v = intsOf(in[3], "axes");
      if (!v)
        return v.takeError();
      axes = *v;
    } else {
      for (size_t i = 0; i < starts->size(); ++i)
        axes.push_back(int64_t(i));
    }
    if (in.size() > 4 && in[4]) {
      Expected<std::vector<int64_t>> v = intsOf(in[4], "steps");
      if (!v)
        return v.takeError();
      steps = *v;
    } else {
      steps.assign(starts->size(), 1);
    }
    if (ends->size() != starts->size() || axes.size() != starts->size() ||
        steps.size() != starts->size())
      return fail("its starts, ends, axes and steps differ in length");
    SmallVector<int64_t, 6> begin(rank, 0),
        count(a->shape.begin(), a->shape.end());
    for (size_t k = 0; k < axes.size(); ++k) {
      int64_t ax = normAxis(axes[k], rank);
      if (ax < 0 || ax >= rank)
        return fail("has an axis out of range");
      int64_t dim = a->shape[ax], st = steps[k];
      if (st != 1)
        return fail("has a step other than 1, which the evaluator does not "
                    "run");
      int64_t s = (*starts)[k], e = (*ends)[k];
      if (s < 0)
        s = s < -dim ? 0 : s + dim;
      if (e < 0)
        e = e < -dim ? 0 : e + dim;
      s = std::min(s, dim);
      e = std::min(e, dim);
      begin[ax] = s;
      count[ax] = std::max<int64_t>(e - s, 0);
    }
    r.kind = a->kind;
    r.shape.assign(count.begin(), count.end());
    SmallVector<int64_t, 6> inStride(rank, 1);
    for (int64_t d = rank - 2; d >= 0; --d)
      inStride[d] = inStride[d + 1] * a->shape[d + 1];
    int64_t base = 0;
    for (int64_t d = 0; d < rank; ++d)
      base += begin[d] * inStride[d];
    gatherStrided(*a, r, base, inStride);
    return outs;
  }

  if (op == "CumSum") {
    if (Error e = needInputs(2))
      return std::move(e);
    const EvalTensor *a = in[0];
    if (a->kind != EvalTensor::Int || in[1]->numel() != 1 ||
        in[1]->kind != EvalTensor::Int)
      return fail("expects an integer input and a scalar axis");
    int64_t rank = int64_t(a->shape.size());
    int64_t axis = normAxis(in[1]->ints[0], rank);
    if (axis < 0 || axis >= rank)
      return fail("has an axis out of range");
    bool exclusive = attrInt("exclusive", 0), reverse = attrInt("reverse", 0);
    r = *a;
    int64_t inner = 1, dim = a->shape[axis];
    for (int64_t d = axis + 1; d < rank; ++d)
      inner *= a->shape[d];
    int64_t outer = dim && inner ? a->numel() / (dim * inner) : 0;
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        int64_t acc = 0;
        for (int64_t k = 0; k < dim; ++k) {
          int64_t kk = reverse ? dim - 1 - k : k;
          int64_t off = (o * dim + kk) * inner + i;
          int64_t v = a->ints[off];
          if (exclusive)
            r.ints[off] = acc;
          if (__builtin_add_overflow(acc, v, &acc))
            return fail("overflows int64");
          if (!exclusive)
            r.ints[off] = acc;
        }
      }
    return outs;
  }

  if (op == "GatherND") {
    if (Error e = needInputs(2))
      return std::move(e);
    const EvalTensor *data = in[0], *idx = in[1];
    if (attrInt("batch_dims", 0) != 0)
      return fail("batch_dims other than 0 is not evaluated");
    if (idx->kind != EvalTensor::Int || idx->shape.empty())
      return fail("expects integer indices");
    int64_t last = idx->shape.back(), rank = int64_t(data->shape.size());
    if (last < 1 || last > rank)
      return fail("its index tuples do not fit its data");
    SmallVector<int64_t, 6> shape(idx->shape.begin(), idx->shape.end() - 1);
    int64_t inner = 1;
    for (int64_t d = last; d < rank; ++d) {
      shape.push_back(data->shape[d]);
      inner *= data->shape[d];
    }
    if (Error e = checkShape(shape))
      return std::move(e);
    r.kind = data->kind;
    r.shape.assign(shape.begin(), shape.end());
    int64_t tuples = last ? idx->numel() / last : 0;
    SmallVector<int64_t, 6> stride(rank, 1);
    for (int64_t d = rank - 2; d >= 0; --d)
      stride[d] = stride[d + 1] * data->shape[d + 1];
    for (int64_t t = 0; t < tuples; ++t) {
      int64_t off = 0;
      for (int64_t k = 0; k < last; ++k) {
        int64_t v = idx->ints[t * last + k], dim = data->shape[k];
        if (v < 0)
          v += dim;
        if (v < 0 || v >= dim)
          return fail("has an index out of range");
        off += v * stride[k];
      }
      for (int64_t i = 0; i < inner; ++i) {
        if (data->kind == EvalTensor::Float)
          r.floats.push_back(data->floats[off + i]);
        else
          r.ints.push_back(data->ints[off + i]);
      }
    }
    return outs;
  }

  if (op == "Transpose") {
    if (Error e = needInputs(1))
      return std::move(e);
    const EvalTensor *a = in[0];
    int64_t rank = int64_t(a->shape.size());
    SmallVector<int64_t, 6> perm;
    if (auto p = attrInts("perm"))
      perm = *p;
    else
      for (int64_t d = rank - 1; d >= 0; --d)
        perm.push_back(d);
    if (int64_t(perm.size()) != rank)
      return fail("has a bad perm");
    SmallVector<int64_t, 6> sorted(perm);
    llvm::sort(sorted);
    for (int64_t d = 0; d < int64_t(sorted.size()); ++d)
      if (sorted[d] != d || int64_t(perm.size()) != rank)
        return fail("has a bad perm");
    SmallVector<int64_t, 6> inStride(rank, 1);
    for (int64_t d = rank - 2; d >= 0; --d)
      inStride[d] = inStride[d + 1] * a->shape[d + 1];
    r.kind = a->kind;
    SmallVector<int64_t, 6> permStride;
    for (int64_t d : perm) {
      r.shape.push_back(a->shape[d]);
      permStride.push_back(inStride[d]);
    }
    gatherStrided(*a, r, 0, permStride);
    return outs;
  }

  if (op == "ConstantOfShape") {
    if (Error e = needInputs(1))
      return std::move(e);
    Expected<std::vector<int64_t>> shape = intsOf(in[0], "the shape");
    if (!shape)
      return shape.takeError();
    if (Error e = checkShape(*shape))
      return std::move(e);
    EvalTensor fill;
    fill.kind = EvalTensor::Float;
    fill.floats = {0.0};
    for (const wire::AttributeProto &a : n.attribute())
      if (a.name() == "value" && a.type() == wire::AttributeProto::TENSOR) {
        Expected<EvalTensor> v = tensorValue(a.t(), 1);
        if (!v)
          return fail(toString(v.takeError()));
        if (v->numel() != 1)
          return fail("its value must have one element");
        fill = std::move(*v);
      }
    r.kind = fill.kind;
    r.shape.assign(shape->begin(), shape->end());
    if (r.kind == EvalTensor::Float)
      r.floats.assign(r.numel(), fill.floats[0]);
    else
      r.ints.assign(r.numel(), fill.ints[0]);
    return outs;
  }

  return fail("is not an op the evaluator of sequence-length subgraphs runs "
              "(the causal mask and the RoPE tables are evaluated for sample "
              "lengths)");
}

} // namespace mlir::moe::onnxfe
