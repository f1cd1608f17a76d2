//===- ONNXDecomposed.cpp - raise torch.onnx.export's decomposed graph ----===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The graph torch.onnx.export (the dynamo exporter) writes for transformers'
// MixtralForCausalLM with the batched_mm experts (docs/frontends.md, ONNX),
// batch 1, sequence dynamic. Per layer, up to operand order and Casts:
//
//   RMS norm   Mul(w, Mul(x, Reciprocal(Sqrt(Add(ReduceMean(Pow(x, 2), [-1]),
//              eps)))))
//   q, k, v    linear(a) -> Reshape [1, -1, n, d] -> Transpose [0, 2, 1, 3]
//   RoPE       Add(Mul(t, cos), Mul(Concat(Neg(Slice(t, d/2:)), Slice(t,
//              :d/2)), sin)); cos and sin computed from the positions
//   repeat_kv  Unsqueeze [2] -> Expand -> Reshape [1, nH, -1, d]
//   scores     MatMul(q·s, kᵀ·s) (kᵀ: Transpose [0, 1, 3, 2], or Reshape,
//              Transpose [0, 2, 1], Reshape), ·s, Add(mask), Softmax(-1),
//              Where(IsNaN(p), 0, p), MatMul(p, v) -> Transpose -> Reshape
//   router     Gemm(Reshape(b, [-1, H]), gate, transB = 1) -> Softmax(-1) ->
//              TopK(k) -> Div(values, ReduceSum(values, -1))
//   experts    GatherND(gate_up [E, 2I, H], ids) · x -> Split -> silu(gate) ·
//              up -> GatherND(down [E, H, I], ids) · . -> · weight ->
//              Reshape [-1, k, H] -> ReduceSum(1) -> Reshape [1, -1, H]
//
// The causal mask and the RoPE tables are subgraphs of the sequence length
// alone: they are not matched node by node but evaluated (ONNXEval.h) for
// sample lengths, and the numbers checked against the causal or
// sliding-window mask and the default RoPE of a theta read from them.
//
//===----------------------------------------------------------------------===//

#include "frontends/InputFiles.h"
#include "frontends/onnx/ONNXEval.h"
#include "frontends/onnx/ONNXRaise.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <map>

using namespace llvm;

namespace mlir::moe::onnxfe::raising {

/// A dimension that is the sequence length in a shape pattern.
constexpr int64_t kSeq = -1000;
/// The position limit of a decomposed graph, which states none (RoPE is
/// computed for any position); --max-seq sets a session's.
constexpr int64_t kDecomposedMaxPositions = 4096;
/// The sample sequence lengths shapes are evaluated at.
constexpr int64_t kShapeLengths[] = {3, 5};

class DecomposedRaiser {
public:
  DecomposedRaiser(Importer &im) : im(im) {}
  Error run(StringRef h);

private:
  using Node = wire::NodeProto;
  struct Norm {
    std::string out, weight;
    const Node *node;
  };
  struct View {
    std::string value;
    int64_t heads, headDim;
    const Node *linear;
  };
  struct Rope {
    std::string out, cos, sin;
  };
  struct Walk {
    const Node *matmul = nullptr;
    int operand = -1;
    double scale = 1;
    bool transposed = false, repeated = false;
  };

  // --- Graph helpers --------------------------------------------------------
  Error fail(const Node &n, const Twine &message) {
    return im.nodeError(n, message);
  }
  bool isCast(const Node &n) { return im.is(n, "Cast") && n.input_size() == 1; }
  /// `v` through the Casts that produce it.
  StringRef stripCasts(StringRef v) {
    for (int i = 0; i < 8; ++i) {
      const Node *p = im.producer(v);
      if (!p || !isCast(*p))
        break;
      v = p->input(0);
    }
    return v;
  }
  /// Raises the Casts between `v` and stripCasts(v).
  void raiseCasts(StringRef v) {
    for (int i = 0; i < 8; ++i) {
      const Node *p = im.producer(v);
      if (!p || !isCast(*p))
        break;
      im.raise(*p);
      v = p->input(0);
    }
  }
  /// The one consumer of `v` (through Casts, which are raised), or an error
  /// naming `by`.
  Expected<const Node *> onlyUser(StringRef v, const Node &by,
                                  const Twine &what);
  /// onlyUser(v, by, what), which must be an `op` (else `unexpected`,
  /// naming that node).
  Expected<const Node *> nextOp(StringRef v, const Node &by, const Twine &what,
                                StringRef op, const Twine &unexpected) {
    Expected<const Node *> n = onlyUser(v, by, what);
    if (n && !im.is(**n, op))
      return fail(**n, unexpected);
    return n;
  }
  /// The consumers of `v` with op type `op`.
  std::vector<const Node *> usersOf(StringRef v, StringRef op) {
    std::vector<const Node *> out;
    for (const Node *c : im.consumers(v))
      if (im.is(*c, op))
        out.push_back(c);
    return out;
  }
  /// The input of binary node `n` other than `v` (through Casts), or "".
  StringRef other(const Node &n, StringRef v) {
    if (n.input_size() != 2)
      return "";
    if (stripCasts(n.input(0)) == v || n.input(0) == v)
      return n.input(1);
    if (stripCasts(n.input(1)) == v || n.input(1) == v)
      return n.input(0);
    return "";
  }

  // --- Evaluation -----------------------------------------------------------
  std::unique_ptr<Evaluator> makeEvaluator(int64_t length);
  Evaluator &evaluator(int64_t length) {
    auto &slot = evaluators[length];
    if (!slot)
      slot = makeEvaluator(length);
    return *slot;
  }
  /// Evaluates `v` at sequence length `length`; raises what was evaluated.
  Expected<const EvalTensor *> eval(StringRef v, int64_t length);
  /// The integer vector `v`, checked against `pattern` (kSeq: the length;
  /// -1 in the value accepted where `inferable`) at the sample lengths.
  Error checkInts(StringRef v, ArrayRef<int64_t> pattern, const Node &by,
                  const Twine &what, bool inferable = false);
  /// `v` as one number the same at every sample length.
  Expected<double> constScalar(StringRef v, const Node &by, const Twine &what);
  /// Reshape/Unsqueeze/Squeeze/ReduceX axes: input 1 or the attribute.
  Expected<std::vector<int64_t>> axesOf(const Node &n, int input);
  void knowShape(StringRef v, ArrayRef<int64_t> pattern) {
    knownShapes[v] = SmallVector<int64_t, 4>(pattern.begin(), pattern.end());
  }

  // --- Patterns -------------------------------------------------------------
  Expected<Norm> matchNorm(StringRef x, StringRef what);
  bool isFinal(StringRef h);
  Error matchLayer(StringRef h, std::string &next);
  Expected<View> matchView(const Node &linear, StringRef linearOut);
  Expected<std::optional<Rope>> matchRope(const View &v);
  Expected<Walk> walkToMatMul(StringRef v, int64_t heads, int64_t kvHeads);
  Error matchAttention(const Norm &norm, std::string &out);
  Error checkRopeTables(const Node &by, StringRef cos, StringRef sin);
  Expected<std::optional<int64_t>> checkMask(const Node &add, StringRef mask);
  Error matchMoE(const Norm &norm, std::string &out);

  ModelSpec &spec() { return im.spec; }

  Importer &im;
  std::string ids;
  std::map<int64_t, std::unique_ptr<Evaluator>> evaluators;
  StringMap<SmallVector<int64_t, 4>> knownShapes;
  std::string ropeCos, ropeSin;
  StringMap<std::optional<int64_t>> masks;
};

Expected<const wire::NodeProto *>
DecomposedRaiser::onlyUser(StringRef v, const Node &by, const Twine &what) {
  for (int i = 0; i < 8; ++i) {
    std::vector<const Node *> users = im.consumers(v);
    if (users.size() != 1)
      return fail(by, "its output must feed " + what + " alone (it feeds " +
                          Twine(users.size()) + " nodes)");
    if (!isCast(*users[0]))
      return users[0];
    im.raise(*users[0]);
    v = users[0]->output(0);
  }
  return fail(by, "too many Casts");
}

std::unique_ptr<Evaluator> DecomposedRaiser::makeEvaluator(int64_t length) {
  Evaluator::Hooks hooks;
  hooks.producer = [this](StringRef v) { return im.producer(v); };
  hooks.leaf = [this,
                length](StringRef v) -> Expected<std::optional<EvalTensor>> {
    if (v == ids) {
      EvalTensor t;
      t.shape = {1, length};
      t.ints.assign(length, 0);
      return std::optional<EvalTensor>(std::move(t));
    }
    const wire::TensorProto *t = im.constant(v);
    if (!t)
      return std::optional<EvalTensor>();
    if (const Node *p = im.producer(v))
      im.raise(*p);
    Expected<EvalTensor> value = tensorValue(*t, Evaluator::kMaxTensorElements);
    if (!value)
      return error(im.path + ": " + toString(value.takeError()) +
                   " (a subgraph of the sequence length reads it)");
    return std::optional<EvalTensor>(std::move(*value));
  };
  hooks.shapeOf =
      [this, length](StringRef v) -> std::optional<SmallVector<int64_t, 4>> {
    auto it = knownShapes.find(v);
    if (it == knownShapes.end())
      return std::nullopt;
    SmallVector<int64_t, 4> s = it->second;
    for (int64_t &d : s)
      if (d == kSeq)
        d = length;
    return s;
  };
  hooks.fileError = [this](const Twine &m) {
    return error(im.path + ": " + m);
  };
  hooks.nodeError = [this](const Node &n, const Twine &m) {
    return im.nodeError(n, m);
  };
  return std::make_unique<Evaluator>(std::move(hooks));
}

Expected<const EvalTensor *> DecomposedRaiser::eval(StringRef v,
                                                    int64_t length) {
  Evaluator &e = evaluator(length);
  Expected<const EvalTensor *> t = e.eval(v);
  if (!t)
    return t.takeError();
  for (const Node *n : e.visited())
    im.raise(*n);
  return t;
}

Error DecomposedRaiser::checkInts(StringRef v, ArrayRef<int64_t> pattern,
                                  const Node &by, const Twine &what,
                                  bool inferable) {
  for (int64_t length : kShapeLengths) {
    Expected<const EvalTensor *> t = eval(v, length);
    if (!t)
      return t.takeError();
    SmallVector<int64_t, 4> want(pattern.begin(), pattern.end());
    for (int64_t &d : want)
      if (d == kSeq)
        d = length;
    bool ok = (*t)->kind == EvalTensor::Int && (*t)->shape.size() <= 1 &&
              (*t)->ints.size() == want.size();
    for (size_t i = 0; ok && i < want.size(); ++i)
      ok = (*t)->ints[i] == want[i] || (inferable && (*t)->ints[i] == -1);
    if (!ok) {
      std::string got = (*t)->kind == EvalTensor::Int
                            ? shapeText((*t)->ints)
                            : std::string("a non-integer value");
      return fail(by, what + " is " + got + " at sequence length " +
                          Twine(length) + ", expected " + shapeText(want));
    }
  }
  return Error::success();
}

Expected<double> DecomposedRaiser::constScalar(StringRef v, const Node &by,
                                               const Twine &what) {
  std::optional<double> value;
  for (int64_t length : kShapeLengths) {
    Expected<const EvalTensor *> t = eval(v, length);
    if (!t)
      return t.takeError();
    if ((*t)->numel() != 1)
      return fail(by, what + " must be a scalar");
    double x = (*t)->number(0);
    if (value && *value != x)
      return fail(by, what + " must not depend on the sequence length");
    value = x;
  }
  return *value;
}

Expected<std::vector<int64_t>> DecomposedRaiser::axesOf(const Node &n,
                                                        int input) {
  if (!n.input(input).empty()) {
    Expected<const EvalTensor *> t = eval(n.input(input), kShapeLengths[0]);
    if (!t)
      return t.takeError();
    if ((*t)->kind != EvalTensor::Int || (*t)->shape.size() > 1)
      return fail(n, "its axes must be an integer vector");
    return (*t)->ints;
  }
  const wire::AttributeProto *a = im.attr(n, "axes");
  if (!a)
    return std::vector<int64_t>();
  if (a->type() != wire::AttributeProto::INTS)
    return fail(n, "attribute 'axes' must be integers");
  std::vector<int64_t> out;
  for (int i = 0; i < a->ints_size(); ++i)
    out.push_back(a->ints(i));
  return out;
}

// --- RMS norm
// -----------------------------------------------------------------

Expected<DecomposedRaiser::Norm> DecomposedRaiser::matchNorm(StringRef x,
                                                             StringRef what) {
  // Pow of x, or of x cast to float32.
  const Node *pow = nullptr;
  std::vector<const Node *> candidates = usersOf(x, "Pow");
  for (const Node *c : im.consumers(x))
    if (isCast(*c))
      for (const Node *p : usersOf(c->output(0), "Pow"))
        candidates.push_back(p);
  for (const Node *c : candidates) {
    if (pow)
      return fail(*c, "a second Pow of the residual stream (" + what + ")");
    pow = c;
  }
  if (!pow)
    return error(im.path +
                 ": no RMS norm (Pow, ReduceMean, Add, Sqrt, "
                 "Reciprocal, Mul) of '" +
                 printableText(x) + "' for the " + what);
  StringRef xc = pow->input(0);
  if (xc != x)
    raiseCasts(xc);
  Expected<double> exponent = constScalar(pow->input(1), *pow, "the exponent");
  if (!exponent)
    return exponent.takeError();
  if (*exponent != 2.0)
    return fail(*pow, "the RMS norm's exponent must be 2, got " +
                          formatNumber(*exponent));
  im.raise(*pow);
  Expected<const Node *> mean =
      nextOp(pow->output(0), *pow, "a ReduceMean", "ReduceMean",
             "expected the RMS norm's ReduceMean");
  if (!mean)
    return mean.takeError();
  Expected<std::vector<int64_t>> axes = axesOf(**mean, 1);
  if (!axes)
    return axes.takeError();
  Expected<int64_t> keep = im.intAttr(**mean, "keepdims", 1);
  if (!keep)
    return keep.takeError();
  if ((*axes != std::vector<int64_t>{-1} && *axes != std::vector<int64_t>{2}) ||
      *keep != 1)
    return fail(**mean, "the RMS norm's mean must be over the last axis "
                        "(axes [-1], keepdims 1)");
  im.raise(**mean);
  Expected<const Node *> add = onlyUser((*mean)->output(0), **mean, "an Add");
  if (!add)
    return add.takeError();
  StringRef epsValue = other(**add, (*mean)->output(0));
  if (!im.is(**add, "Add") || epsValue.empty())
    return fail(**add, "expected the RMS norm's Add of epsilon");
  Expected<double> epsilon = constScalar(epsValue, **add, "epsilon");
  if (!epsilon)
    return epsilon.takeError();
  double e = shortestDecimal(float(*epsilon));
  if (!(e > 0))
    return fail(**add, "epsilon must be positive");
  if (im.eps && *im.eps != e)
    return fail(**add, "epsilon " + formatNumber(e) +
                           " differs from the other norms' " +
                           formatNumber(*im.eps) +
                           " (moe-compile takes one epsilon per model)");
  im.eps = e;
  im.raise(**add);
  Expected<const Node *> sqrt = nextOp((*add)->output(0), **add, "a Sqrt",
                                       "Sqrt", "expected the RMS norm's Sqrt");
  if (!sqrt)
    return sqrt.takeError();
  im.raise(**sqrt);
  Expected<const Node *> rec =
      nextOp((*sqrt)->output(0), **sqrt, "a Reciprocal", "Reciprocal",
             "expected the RMS norm's Reciprocal");
  if (!rec)
    return rec.takeError();
  im.raise(**rec);
  Expected<const Node *> mul = onlyUser((*rec)->output(0), **rec, "a Mul");
  if (!mul)
    return mul.takeError();
  if (!im.is(**mul, "Mul") || other(**mul, (*rec)->output(0)) != xc)
    return fail(**mul, "expected the RMS norm's Mul of its input by the "
                       "reciprocal square root");
  im.raise(**mul);
  Expected<const Node *> scale = onlyUser((*mul)->output(0), **mul, "a Mul");
  if (!scale)
    return scale.takeError();
  StringRef normed = stripCasts((*scale)->input(0)) == (*mul)->output(0)
                         ? (*scale)->input(0)
                         : (*scale)->input(1);
  StringRef w = other(**scale, normed);
  if (!im.is(**scale, "Mul") || w.empty() || !im.initializer(w))
    return fail(**scale, "expected the RMS norm's Mul by its weight (an "
                         "initializer [hidden])");
  im.raise(**scale);
  return Norm{(*scale)->output(0), w.str(), pow};
}

bool DecomposedRaiser::isFinal(StringRef h) {
  // The final norm's chain of single consumers reaches a linear layer whose
  // output (maybe cast) is the graph's first output; a layer's norm output
  // feeds q, k and v.
  std::vector<const Node *> pows = usersOf(h, "Pow");
  for (const Node *c : im.consumers(h))
    if (isCast(*c))
      for (const Node *p : usersOf(c->output(0), "Pow"))
        pows.push_back(p);
  if (pows.size() != 1)
    return false;
  StringRef v = pows[0]->output(0);
  for (int i = 0; i < 12; ++i) {
    std::vector<const Node *> users = im.consumers(v);
    if (users.size() != 1)
      return false;
    v = users[0]->output(0);
    if (im.is(*users[0], "MatMul") || im.is(*users[0], "Gemm")) {
      if (v == im.graph.output(0).name())
        return true;
      std::vector<const Node *> next = im.consumers(v);
      return next.size() == 1 && isCast(*next[0]) &&
             next[0]->output(0) == im.graph.output(0).name();
    }
  }
  return false;
}

// --- Attention
// ------------------------------------------------------------------

Expected<DecomposedRaiser::View> DecomposedRaiser::matchView(const Node &linear,
                                                             StringRef out) {
  Expected<const Node *> reshape =
      nextOp(out, linear, "a Reshape", "Reshape",
             "expected a Reshape of a projection to [1, -1, "
             "heads, head_dim]");
  if (!reshape)
    return reshape.takeError();
  Expected<const EvalTensor *> shape =
      eval((*reshape)->input(1), kShapeLengths[0]);
  if (!shape)
    return shape.takeError();
  if ((*shape)->kind != EvalTensor::Int || (*shape)->ints.size() != 4)
    return fail(**reshape, "its shape must be [1, -1, heads, head_dim]");
  int64_t heads = (*shape)->ints[2], headDim = (*shape)->ints[3];
  if (heads < 1 || headDim < 2 || headDim % 2 || heads > (int64_t(1) << 20) ||
      headDim > (int64_t(1) << 20))
    return fail(**reshape, "its shape must be [1, -1, heads, head_dim] with "
                           "an even head_dim");
  if (Error e = checkInts((*reshape)->input(1), {1, kSeq, heads, headDim},
                          **reshape, "its shape", true))
    return std::move(e);
  im.raise(**reshape);
  Expected<const Node *> tr =
      onlyUser((*reshape)->output(0), **reshape, "a Transpose");
  if (!tr)
    return tr.takeError();
  const wire::AttributeProto *perm = im.attr(**tr, "perm");
  if (!im.is(**tr, "Transpose") || !perm || perm->ints_size() != 4 ||
      perm->ints(0) != 0 || perm->ints(1) != 2 || perm->ints(2) != 1 ||
      perm->ints(3) != 3)
    return fail(**tr, "expected a Transpose [0, 2, 1, 3] of the heads");
  im.raise(**tr);
  knowShape((*tr)->output(0), {1, heads, kSeq, headDim});
  return View{(*tr)->output(0), heads, headDim, &linear};
}

Expected<std::optional<DecomposedRaiser::Rope>>
DecomposedRaiser::matchRope(const View &view) {
  StringRef t = view.value;
  int64_t d = view.headDim, half = d / 2;
  std::vector<const Node *> slices = usersOf(t, "Slice"),
                            muls = usersOf(t, "Mul");
  if (slices.empty())
    return std::optional<Rope>();
  if (slices.size() != 2 || muls.size() != 1 || im.consumers(t).size() != 3)
    return fail(*slices[0], "expected RoPE's rotate_half: a Mul by cos and "
                            "two Slices of the heads");
  // Which Slice is the first half: starts [0], ends [d/2] on the last axis.
  const Node *lo = nullptr, *hi = nullptr;
  for (const Node *s : slices) {
    Expected<const EvalTensor *> starts = eval(s->input(1), kShapeLengths[0]);
    if (!starts)
      return starts.takeError();
    if ((*starts)->kind == EvalTensor::Int && (*starts)->ints.size() == 1)
      ((*starts)->ints[0] == 0 ? lo : hi) = s;
  }
  if (!lo || !hi)
    return fail(*slices[0], "expected RoPE's Slices of the two halves");
  constexpr int64_t kEnd = INT64_MAX;
  for (auto [s, start] : {std::pair(lo, int64_t(0)), std::pair(hi, half)}) {
    if (s->input_size() < 4 || s->input_size() > 5)
      return fail(*s, "expected starts, ends and axes");
    if (Error e = checkInts(s->input(1), {start}, *s, "its starts"))
      return std::move(e);
    Expected<const EvalTensor *> ends = eval(s->input(2), kShapeLengths[0]);
    if (!ends)
      return ends.takeError();
    int64_t end = (*ends)->kind == EvalTensor::Int && (*ends)->numel() == 1
                      ? (*ends)->ints[0]
                      : -1;
    if (s == lo ? end != half : end < d)
      return fail(*s, "RoPE's halves must be [0, " + Twine(half) + ") and [" +
                          Twine(half) + ", " + Twine(d) +
                          ") of the head (partial RoPE is not raised)");
    (void)kEnd;
    Expected<std::vector<int64_t>> axes = axesOf(*s, 3);
    if (!axes)
      return axes.takeError();
    if (*axes != std::vector<int64_t>{3} && *axes != std::vector<int64_t>{-1})
      return fail(*s, "must slice the last axis");
    if (s->input_size() == 5 && !s->input(4).empty())
      if (Error e = checkInts(s->input(4), {1}, *s, "its steps"))
        return std::move(e);
    im.raise(*s);
  }
  Expected<const Node *> neg = nextOp(hi->output(0), *hi, "a Neg", "Neg",
                                      "expected RoPE's Neg of the second half");
  if (!neg)
    return neg.takeError();
  im.raise(**neg);
  Expected<const Node *> cat = onlyUser((*neg)->output(0), **neg, "a Concat");
  if (!cat)
    return cat.takeError();
  Expected<int64_t> axis = im.intAttr(**cat, "axis", std::nullopt);
  if (!axis)
    return axis.takeError();
  if (!im.is(**cat, "Concat") || (*cat)->input_size() != 2 ||
      (*cat)->input(0) != (*neg)->output(0) ||
      (*cat)->input(1) != lo->output(0) || (*axis != -1 && *axis != 3))
    return fail(**cat, "expected RoPE's Concat(-second half, first half) on "
                       "the last axis (rotate_half)");
  im.raise(**cat);
  Expected<const Node *> mulSin =
      onlyUser((*cat)->output(0), **cat, "a Mul by sin");
  if (!mulSin)
    return mulSin.takeError();
  StringRef sin = other(**mulSin, (*cat)->output(0));
  StringRef cos = other(*muls[0], t);
  if (!im.is(**mulSin, "Mul") || sin.empty() || cos.empty())
    return fail(**mulSin, "expected RoPE's Mul by sin");
  im.raise(**mulSin);
  im.raise(*muls[0]);
  // Add(t·cos, rotate_half(t)·sin).
  Expected<const Node *> add =
      onlyUser((*mulSin)->output(0), **mulSin, "an Add");
  if (!add)
    return add.takeError();
  if (!im.is(**add, "Add") ||
      other(**add, (*mulSin)->output(0)) != muls[0]->output(0))
    return fail(**add, "expected RoPE's Add of x·cos and rotate_half(x)·sin");
  im.raise(**add);
  knowShape((*add)->output(0), {1, view.heads, kSeq, d});
  if (Error e = checkRopeTables(**add, cos, sin))
    return std::move(e);
  return std::optional<Rope>(Rope{(*add)->output(0), cos.str(), sin.str()});
}

Error DecomposedRaiser::checkRopeTables(const Node &by, StringRef cos,
                                        StringRef sin) {
  if (!ropeCos.empty()) {
    if (cos != ropeCos || sin != ropeSin)
      return fail(by, "every RoPE must use the same cos and sin tables");
    return Error::success();
  }
  // The angles: the input of the Cos (and Sin) behind the tables.
  auto source = [&](StringRef v, StringRef op) -> const Node * {
    for (int i = 0; i < 16; ++i) {
      const Node *p = im.producer(v);
      if (!p || p->input_size() < 1)
        return nullptr;
      if (im.is(*p, op))
        return p;
      if (!isCast(*p) && !im.is(*p, "Unsqueeze") && !im.is(*p, "Reshape") &&
          !im.is(*p, "Identity"))
        return nullptr;
      v = p->input(0);
    }
    return nullptr;
  };
  const Node *c = source(cos, "Cos"), *s = source(sin, "Sin");
  if (!c || !s || c->input(0) != s->input(0))
    return fail(by, "its cos and sin tables must be Cos and Sin of one "
                    "angle table (through Casts and Unsqueezes)");
  int64_t d = spec().headDim, half = d / 2;
  // The angles: position p, index i is p · inv_freq[i mod d/2] (the
  // halves repeat: rotate-half), the same inv_freq at every length.
  std::vector<double> inv(half);
  for (int64_t length : {int64_t(3), int64_t(64)}) {
    Expected<const EvalTensor *> angles = eval(c->input(0), length);
    if (!angles)
      return angles.takeError();
    const EvalTensor &a = **angles;
    if (a.kind != EvalTensor::Float || a.numel() != length * d ||
        a.shape.empty() || a.shape.back() != d)
      return fail(*c, "the RoPE angles must be [1, positions, head_dim], "
                      "got " +
                          shapeText(a.shape) + " at sequence length " +
                          Twine(length));
    if (length == 3)
      for (int64_t i = 0; i < half; ++i)
        inv[i] = a.floats[d + i];
    for (int64_t p = 0; p < length; ++p)
      for (int64_t i = 0; i < d; ++i) {
        double want = double(p) * inv[i % half], got = a.floats[p * d + i];
        if (!(std::abs(got - want) <= 1e-5 * std::abs(want) + 1e-9))
          return fail(*c, formatv("the RoPE angle of position {0}, index {1} "
                                  "is {2}, not position × inv_freq = {3} "
                                  "(positions must be 0, 1, ...; the halves "
                                  "must repeat)",
                                  p, i, got, want)
                              .str());
      }
  }
  // theta: inv_freq[i] = theta^(-2i/d), fitted in log space, then the
  // nearest value of three significant digits when that fits as well.
  double num = 0, den = 0;
  for (int64_t i = 1; i < half; ++i) {
    double x = 2.0 * double(i) / double(d);
    num += x * -std::log(inv[i] > 0 ? inv[i] : 1e-300);
    den += x * x;
  }
  double theta = den > 0 ? std::exp(num / den) : 0;
  if (!(theta > 1.0) || !std::isfinite(theta))
    return fail(*c, "is not a RoPE table (theta " + formatNumber(theta) + ")");
  // inv_freq within 1e-3 (an f16 inv_freq, as model.half() leaves it, is
  // rounded by up to 4.9e-4).
  auto fits = [&](double t) {
    double worst = 0;
    for (int64_t i = 0; i < half; ++i) {
      double want = std::pow(t, -2.0 * double(i) / double(d));
      worst = std::max(worst, std::abs(inv[i] / want - 1));
    }
    return worst;
  };
  double unit = std::pow(10.0, std::floor(std::log10(theta)) - 2);
  double round3 = std::round(theta / unit) * unit;
  if (fits(round3) <= 1e-3)
    theta = round3;
  double worst = fits(theta);
  if (!(worst <= 1e-3))
    return fail(*c, formatv("inv_freq is not theta^(-2i/d) for any theta "
                            "(the best, {0}, is off by {1} relative): "
                            "scaled RoPE is not raised from a decomposed "
                            "graph",
                            formatNumber(theta), worst)
                        .str());
  // The tables: cos and sin of those angles (no attention scaling).
  for (int64_t length : {int64_t(1), int64_t(3), int64_t(64)}) {
    Expected<const EvalTensor *> ct = eval(cos, length);
    if (!ct)
      return ct.takeError();
    Expected<const EvalTensor *> st = eval(sin, length);
    if (!st)
      return st.takeError();
    for (const EvalTensor *t : {*ct, *st}) {
      bool isCos = t == *ct;
      if (t->kind != EvalTensor::Float || t->numel() != length * d ||
          t->shape.empty() || t->shape.back() != d)
        return fail(isCos ? *c : *s,
                    "the RoPE table must be [1, 1, positions, head_dim], "
                    "got " +
                        shapeText(t->shape) + " at sequence length " +
                        Twine(length));
      for (int64_t p = 0; p < length; ++p)
        for (int64_t i = 0; i < d; ++i) {
          double angle = double(p) * inv[i % half];
          double want = isCos ? std::cos(angle) : std::sin(angle);
          double got = t->floats[p * d + i];
          if (!(std::abs(got - want) <= 2e-3))
            return fail(isCos ? *c : *s,
                        formatv("the RoPE table at position {0}, index {1} "
                                "is {2}, not the {3} of its angle, {4}; "
                                "scaled RoPE is not raised from a "
                                "decomposed graph",
                                p, i, got, isCos ? "cos" : "sin", want)
                            .str());
        }
    }
  }
  spec().ropeTheta = theta;
  ropeCos = cos.str();
  ropeSin = sin.str();
  return Error::success();
}

Expected<DecomposedRaiser::Walk>
DecomposedRaiser::walkToMatMul(StringRef v, int64_t heads, int64_t kvHeads) {
  Walk w;
  int64_t d = spec().headDim;
  const Node *from = im.producer(v);
  for (int step = 0; step < 16; ++step) {
    // Shape nodes of the value feed the shapes of the Reshapes below, which
    // are evaluated.
    std::vector<const Node *> users;
    for (const Node *c : im.consumers(v))
      if (!im.is(*c, "Shape"))
        users.push_back(c);
    if (users.size() != 1 && !from)
      return error(im.path + ": value '" + printableText(v) +
                   "' must feed one node on the way to the attention's "
                   "MatMul (it feeds " +
                   Twine(users.size()) + ")");
    if (users.size() != 1)
      return fail(*from, "its output must feed one node on the way to the "
                         "attention's MatMul (it feeds " +
                             Twine(users.size()) + ")");
    const Node &n = *users[0];
    if (isCast(n)) {
      im.raise(n);
    } else if (im.is(n, "MatMul")) {
      w.matmul = &n;
      w.operand = n.input(0) == v ? 0 : 1;
      return w;
    } else if (im.is(n, "Mul") || im.is(n, "Div")) {
      StringRef c = other(n, v);
      if (c.empty() || (im.is(n, "Div") && n.input(0) != v))
        return fail(n, "expected a scale of the attention by a constant");
      Expected<double> s = constScalar(c, n, "the attention's scale");
      if (!s)
        return s.takeError();
      w.scale = im.is(n, "Mul") ? w.scale * *s : w.scale / *s;
      im.raise(n);
    } else if (im.is(n, "Transpose")) {
      const wire::AttributeProto *perm = im.attr(n, "perm");
      if (!perm || perm->ints_size() != 4 || perm->ints(0) != 0 ||
          perm->ints(1) != 1 || perm->ints(2) != 3 || perm->ints(3) != 2)
        return fail(n, "expected a Transpose [0, 1, 3, 2] of the keys");
      w.transposed = !w.transposed;
      im.raise(n);
      knowShape(n.output(0), {1, heads, d, kSeq});
    } else if (im.is(n, "Reshape")) {
      // kᵀ as Reshape [-1, L, d] -> Transpose [0, 2, 1] -> Reshape
      // [1, nH, d, L].
      if (Error e =
              checkInts(n.input(1), {heads, kSeq, d}, n, "its shape", true))
        return std::move(e);
      im.raise(n);
      Expected<const Node *> t = onlyUser(n.output(0), n, "a Transpose");
      if (!t)
        return t.takeError();
      const wire::AttributeProto *perm = im.attr(**t, "perm");
      if (!im.is(**t, "Transpose") || !perm || perm->ints_size() != 3 ||
          perm->ints(0) != 0 || perm->ints(1) != 2 || perm->ints(2) != 1)
        return fail(**t, "expected a Transpose [0, 2, 1] of the keys");
      im.raise(**t);
      Expected<const Node *> r =
          nextOp((*t)->output(0), **t, "a Reshape", "Reshape",
                 "expected a Reshape back to [1, heads, head_dim, "
                 "-1]");
      if (!r)
        return r.takeError();
      if (Error e = checkInts((*r)->input(1), {1, heads, d, kSeq}, **r,
                              "its shape", true))
        return std::move(e);
      im.raise(**r);
      w.transposed = !w.transposed;
      v = (*r)->output(0);
      knowShape(v, {1, heads, d, kSeq});
      from = *r;
      continue;
    } else if (im.is(n, "Unsqueeze") && !w.repeated) {
      // repeat_kv: Unsqueeze [2] -> Expand [1, nKV, g, L, d] -> Reshape
      // [1, nH, -1, d].
      int64_t group = heads / kvHeads;
      Expected<std::vector<int64_t>> axes = axesOf(n, 1);
      if (!axes)
        return axes.takeError();
      if (*axes != std::vector<int64_t>{2})
        return fail(n, "expected repeat_kv's Unsqueeze at axis 2");
      im.raise(n);
      Expected<const Node *> x = nextOp(n.output(0), n, "an Expand", "Expand",
                                        "expected repeat_kv's Expand");
      if (!x)
        return x.takeError();
      if (Error e = checkInts((*x)->input(1), {1, kvHeads, group, kSeq, d}, **x,
                              "its shape"))
        return std::move(e);
      im.raise(**x);
      Expected<const Node *> r =
          nextOp((*x)->output(0), **x, "a Reshape", "Reshape",
                 "expected repeat_kv's Reshape");
      if (!r)
        return r.takeError();
      if (Error e = checkInts((*r)->input(1), {1, heads, kSeq, d}, **r,
                              "its shape", true))
        return std::move(e);
      im.raise(**r);
      w.repeated = true;
      v = (*r)->output(0);
      knowShape(v, {1, heads, kSeq, d});
      from = *r;
      continue;
    } else {
      return fail(n, "is not part of the attention pattern moe-compile "
                     "raises from a decomposed graph");
    }
    v = n.output(0);
    from = &n;
  }
  return fail(*from, "too many nodes before the attention's MatMul");
}

Expected<std::optional<int64_t>> DecomposedRaiser::checkMask(const Node &add,
                                                             StringRef mask) {
  auto it = masks.find(mask);
  if (it != masks.end())
    return it->second;
  // The allowed (query, key) pairs of the mask at `length`, or an error.
  auto allowed = [&](Evaluator &e,
                     int64_t length) -> Expected<std::vector<bool>> {
    Expected<const EvalTensor *> t = e.eval(mask);
    if (!t)
      return t.takeError();
    for (const Node *n : e.visited())
      im.raise(*n);
    const EvalTensor &m = **t;
    size_t r = m.shape.size();
    if (m.kind != EvalTensor::Float || r < 2 || m.shape[r - 1] != length ||
        m.shape[r - 2] != length || m.numel() != length * length)
      return fail(add, "the attention mask must be [1, 1, L, L] floats, got " +
                           shapeText(m.shape) + " at sequence length " +
                           Twine(length));
    std::vector<bool> out(length * length);
    for (int64_t i = 0; i < length * length; ++i) {
      double v = m.floats[i];
      if (v == 0)
        out[i] = true;
      else if (v <= -1e4)
        out[i] = false;
      else
        return fail(add, formatv("the attention mask has {0} at query {1}, "
                                 "key {2} (sequence length {3}); it must be "
                                 "0 or a large negative value",
                                 v, i / length, i % length, length)
                             .str());
    }
    return out;
  };
  auto matches = [](const std::vector<bool> &a, int64_t length,
                    std::optional<int64_t> window) {
    for (int64_t i = 0; i < length; ++i)
      for (int64_t j = 0; j < length; ++j) {
        bool want = j <= i && (!window || i - j < *window);
        if (a[i * length + j] != want)
          return false;
      }
    return true;
  };
  auto describe = [](const std::vector<bool> &a, int64_t length) {
    std::string s;
    for (int64_t i = 0; i < std::min<int64_t>(length, 6); ++i) {
      s += i ? " " : "";
      for (int64_t j = 0; j < std::min<int64_t>(length, 6); ++j)
        s += a[i * length + j] ? '1' : '0';
    }
    return s;
  };
  constexpr int64_t kLengths[] = {1, 2, 3, 6, 17};
  constexpr int64_t kLong = 17;
  Expected<std::vector<bool>> longest = allowed(evaluator(kLong), kLong);
  if (!longest)
    return longest.takeError();
  for (int64_t i = 0; i < kLong; ++i)
    for (int64_t j = i + 1; j < kLong; ++j)
      if ((*longest)[i * kLong + j])
        return fail(add, "the attention mask is not causal: query " + Twine(i) +
                             " sees key " + Twine(j) + " (sequence length " +
                             Twine(kLong) + ")");
  int64_t seen = 0;
  for (int64_t j = 0; j < kLong; ++j)
    seen += (*longest)[(kLong - 1) * kLong + j];
  std::optional<int64_t> window;
  if (seen < kLong)
    window = std::max<int64_t>(seen, 1);
  if (!window) {
    // A window longer than the samples: the constant that sets it, changed
    // to 4 and then 5, must make the mask a window of w and w + 1.
    const StringMap<bool> &leaves = evaluator(kLong).leaves();
    std::vector<std::string> names;
    for (const auto &l : leaves)
      names.push_back(l.getKey().str());
    llvm::sort(names);
    int probes = 0;
    for (const std::string &name : names) {
      Expected<const EvalTensor *> c = evaluator(kLong).eval(name);
      if (!c)
        return c.takeError();
      if ((*c)->kind != EvalTensor::Int || (*c)->numel() != 1)
        continue;
      int64_t value = (*c)->ints[0];
      if (value < kLong || value > (int64_t(1) << 31))
        continue;
      if (++probes > 16)
        return fail(add, "the attention mask reads more than 16 integer "
                         "constants that could be a sliding window");
      std::optional<int64_t> probe[2];
      for (int k = 0; k < 2; ++k) {
        std::unique_ptr<Evaluator> e = makeEvaluator(12);
        EvalTensor small = **c;
        small.ints[0] = 4 + k;
        e->override(name, small);
        Expected<std::vector<bool>> a = allowed(*e, 12);
        if (!a) {
          // The changed constant breaks the subgraph: not a window's.
          consumeError(a.takeError());
          break;
        }
        for (int64_t w = 1; w <= 12 && !probe[k]; ++w)
          if (matches(*a, 12, w == 12 ? std::nullopt : std::optional(w)))
            probe[k] = w;
      }
      if (probe[0] == 12 || (!probe[0] && !probe[1]))
        continue;
      if (!probe[0] || !probe[1] || *probe[1] != *probe[0] + 1)
        return fail(add, "the attention mask depends on the constant '" +
                             printableText(name) +
                             "' in a way that is not a sliding window");
      window = value + (*probe[0] - 4);
      if (*window < 1)
        return fail(add, "the attention mask's window is not positive");
      break;
    }
  }
  for (int64_t length : kLengths) {
    Expected<std::vector<bool>> a = allowed(evaluator(length), length);
    if (!a)
      return a.takeError();
    if (!matches(*a, length, window))
      return fail(add, "the attention mask is not " +
                           (window ? "a sliding window of " + Twine(*window)
                                   : Twine("causal")) +
                           " at sequence length " + Twine(length) +
                           " (allowed keys by query: " + describe(*a, length) +
                           ")");
  }
  masks[mask] = window;
  return window;
}

Error DecomposedRaiser::matchAttention(const Norm &norm, std::string &out) {
  // q, k and v: the linear layers of the norm's output.
  std::vector<const Node *> users = im.consumers(norm.out);
  if (users.size() != 3)
    return fail(*norm.node, "the attention norm's output must feed the q, k "
                            "and v projections alone (it feeds " +
                                Twine(users.size()) + " nodes)");
  std::vector<View> views;
  std::vector<Importer::Linear> linears;
  for (const Node *u : users) {
    Expected<Importer::Linear> l =
        im.matchLinear(u->output(0), "attention projection");
    if (!l)
      return l.takeError();
    if (l->x != norm.out)
      return fail(*u, "expected a projection of the attention norm's output");
    Expected<View> v = matchView(*u, u->output(0));
    if (!v)
      return v.takeError();
    views.push_back(*v);
    linears.push_back(*l);
  }
  // RoPE on q and k, not on v.
  std::vector<std::optional<Rope>> ropes;
  int vIndex = -1, roped = 0;
  for (auto [i, v] : llvm::enumerate(views)) {
    int64_t d = v.headDim;
    if (spec().headDim == 0)
      spec().headDim = d;
    else if (spec().headDim != d)
      return fail(*v.linear, "head_dim " + Twine(d) + " differs from " +
                                 Twine(spec().headDim));
    Expected<std::optional<Rope>> r = matchRope(v);
    if (!r)
      return r.takeError();
    ropes.push_back(*r);
    if (*r)
      ++roped;
    else
      vIndex = int(i);
  }
  if (roped != 2 || vIndex < 0)
    return fail(*norm.node, "expected RoPE on two of the three projections "
                            "(q and k) and not on v");
  // Follow q and k to the scores' MatMul.
  int qIndex = -1, kIndex = -1;
  Walk qw, kw;
  int64_t kvHeads = views[vIndex].heads;
  // q's heads (the larger count of the two roped projections) shape
  // repeat_kv and kᵀ.
  int64_t qHeads = 0;
  for (int i = 0; i < 3; ++i)
    if (i != vIndex)
      qHeads = std::max(qHeads, views[i].heads);
  if (qHeads % kvHeads)
    return fail(*norm.node, "q's heads (" + Twine(qHeads) +
                                ") must be a multiple of v's (" +
                                Twine(kvHeads) + ")");
  for (int i = 0; i < 3; ++i) {
    if (i == vIndex)
      continue;
    Expected<Walk> w = walkToMatMul(ropes[i]->out, qHeads, kvHeads);
    if (!w)
      return w.takeError();
    if (w->operand == 0) {
      qIndex = i;
      qw = *w;
    } else {
      kIndex = i;
      kw = *w;
    }
  }
  if (qIndex < 0 || kIndex < 0 || qw.matmul != kw.matmul)
    return fail(*norm.node, "q and k must meet in one MatMul (q first)");
  if (qw.transposed || qw.repeated || !kw.transposed ||
      (views[kIndex].heads != views[qIndex].heads) != kw.repeated)
    return fail(*qw.matmul, "expected MatMul(q, transpose(repeat_kv(k)))");
  int64_t heads = views[qIndex].heads;
  if (views[kIndex].heads != kvHeads || heads % kvHeads)
    return fail(*kw.matmul, "k and v must have the same heads, dividing q's");
  int64_t l = int64_t(im.layers.size()) - 1;
  if (l == 0) {
    spec().numHeads = heads;
    spec().numKvHeads = kvHeads;
  } else if (spec().numHeads != heads || spec().numKvHeads != kvHeads) {
    return fail(*qw.matmul, "heads and kv heads must be the same in every "
                            "layer");
  }
  const Node &scores = *qw.matmul;
  im.raise(scores);
  knowShape(scores.output(0), {1, heads, kSeq, kSeq});
  // Scores: [scale], Add(mask), Softmax(-1), [Where(IsNaN(p), 0, p)].
  double scale = qw.scale * kw.scale;
  StringRef v = scores.output(0);
  const Node *prev = &scores;
  const Node *maskAdd = nullptr, *softmax = nullptr, *pv = nullptr;
  for (int step = 0; step < 12 && !pv; ++step) {
    // After the softmax, p may feed IsNaN and the Where that uses it.
    std::vector<const Node *> isNaN = usersOf(v, "IsNaN");
    Expected<const Node *> n =
        softmax && isNaN.size() == 1
            ? Expected<const Node *>(isNaN[0])
            : onlyUser(v, *prev, "the attention's softmax");
    if (!n)
      return n.takeError();
    const Node &c = **n;
    if (!softmax && (im.is(c, "Mul") || im.is(c, "Div"))) {
      StringRef k = other(c, v);
      if (k.empty() || (im.is(c, "Div") && c.input(0) != v))
        return fail(c, "expected a scale of the scores by a constant");
      Expected<double> s = constScalar(k, c, "the attention's scale");
      if (!s)
        return s.takeError();
      scale = im.is(c, "Mul") ? scale * *s : scale / *s;
    } else if (!softmax && !maskAdd && im.is(c, "Add")) {
      StringRef mask = other(c, v);
      if (mask.empty())
        return fail(c, "expected the Add of the attention mask");
      Expected<std::optional<int64_t>> window = checkMask(c, mask);
      if (!window)
        return window.takeError();
      im.windows.push_back(*window);
      maskAdd = &c;
    } else if (!softmax && im.is(c, "Softmax")) {
      Expected<int64_t> axis = im.intAttr(c, "axis", -1);
      if (!axis)
        return axis.takeError();
      if (*axis != -1 && *axis != 3)
        return fail(c, "the attention's Softmax must be over the keys (axis "
                       "-1), got axis " +
                           Twine(*axis));
      softmax = &c;
    } else if (softmax && im.is(c, "IsNaN")) {
      // Where(IsNaN(p), 0, p): the rows with no key (none here).
      std::vector<const Node *> ws = usersOf(c.output(0), "Where");
      std::vector<const Node *> all = im.consumers(v);
      if (ws.size() != 1 || all.size() != 2 || ws[0]->input(2) != v ||
          llvm::find(all, ws[0]) == all.end())
        return fail(c, "expected Where(IsNaN(p), 0, p) after the softmax");
      Expected<double> zero = constScalar(ws[0]->input(1), *ws[0],
                                          "the "
                                          "fill");
      if (!zero)
        return zero.takeError();
      if (*zero != 0)
        return fail(*ws[0], "must replace NaN by 0");
      im.raise(c);
      im.raise(*ws[0]);
      v = ws[0]->output(0);
      prev = ws[0];
      continue;
    } else if (softmax && im.is(c, "MatMul") && c.input(0) == v) {
      pv = &c;
      break;
    } else {
      return fail(c, "is not part of the attention pattern moe-compile "
                     "raises from a decomposed graph");
    }
    im.raise(c);
    v = c.output(0);
    prev = &c;
  }
  if (!maskAdd || !softmax || !pv)
    return fail(scores, "expected the scores' mask Add, Softmax and MatMul "
                        "by v");
  double want = 1.0 / std::sqrt(double(spec().headDim));
  if (!(std::abs(scale - want) <= 1e-6 * want))
    return fail(*maskAdd, "the attention's scales multiply to " +
                              formatNumber(scale) +
                              ", not 1/sqrt(head_dim) = " + formatNumber(want));
  // v: repeat_kv to the MatMul's second operand.
  Expected<Walk> vw = walkToMatMul(views[vIndex].value, heads, kvHeads);
  if (!vw)
    return vw.takeError();
  if (vw->matmul != pv || vw->operand != 1 || vw->transposed ||
      vw->scale != 1 || vw->repeated != (kvHeads != heads))
    return fail(*pv, "expected MatMul(p, repeat_kv(v))");
  im.raise(*pv);
  // Transpose [0, 2, 1, 3] -> Reshape [1, -1, nH·d] -> the output projection.
  Expected<const Node *> tr = onlyUser(pv->output(0), *pv, "a Transpose");
  if (!tr)
    return tr.takeError();
  const wire::AttributeProto *perm = im.attr(**tr, "perm");
  if (!im.is(**tr, "Transpose") || !perm || perm->ints_size() != 4 ||
      perm->ints(0) != 0 || perm->ints(1) != 2 || perm->ints(2) != 1 ||
      perm->ints(3) != 3)
    return fail(**tr, "expected a Transpose [0, 2, 1, 3] of the attention");
  im.raise(**tr);
  Expected<const Node *> rs =
      nextOp((*tr)->output(0), **tr, "a Reshape", "Reshape",
             "expected a Reshape of the attention to [1, -1, "
             "heads·head_dim]");
  if (!rs)
    return rs.takeError();
  int64_t d = spec().headDim, H = spec().hiddenSize;
  if (Error e = checkInts((*rs)->input(1), {1, kSeq, heads * d}, **rs,
                          "its shape", true))
    return e;
  im.raise(**rs);
  Expected<const Node *> o =
      onlyUser((*rs)->output(0), **rs, "the output projection");
  if (!o)
    return o.takeError();
  Expected<Importer::Linear> ol =
      im.matchLinear((*o)->output(0), "output projection");
  if (!ol)
    return ol.takeError();
  RaisedModel::Layer &layer = im.layers.back();
  const Node *byNode[3] = {views[qIndex].linear, views[kIndex].linear,
                           views[vIndex].linear};
  std::string *keys[3] = {&layer.q, &layer.k, &layer.v};
  int idx[3] = {qIndex, kIndex, vIndex};
  const char *roles[3] = {"query", "key", "value"};
  for (int i = 0; i < 3; ++i) {
    const std::string &w = linears[idx[i]].weight;
    int64_t rows = (i == 0 ? heads : kvHeads) * d;
    if (Error e = im.addLinear(*keys[i] = w, linears[idx[i]], {rows, H},
                               *byNode[i], roles[i]))
      return e;
  }
  if (Error e = im.addLinear(layer.o = ol->weight, *ol, {H, heads * d}, **o,
                             "output"))
    return e;
  out = (*o)->output(0);
  return Error::success();
}

// --- Router and experts
// -----------------------------------------------------------

/// ONNX Runtime's fused experts among standard ops: `com.microsoft.MoE` or
/// `QMoE` of the norm's output, raised as in the fused graph.
static bool isFusedExperts(const wire::NodeProto &n) {
  return n.domain() == "com.microsoft" &&
         (n.op_type() == "MoE" || n.op_type() == "QMoE");
}

Error DecomposedRaiser::matchMoE(const Norm &norm, std::string &out) {
  for (const Node *c : im.consumers(norm.out))
    if (isFusedExperts(*c))
      return im.matchMoE(Importer::Norm{"", norm.out, norm.weight, norm.node},
                         out);
  int64_t H = spec().hiddenSize;
  // The norm's output and its Reshapes to [-1, H].
  std::vector<std::string> rows = {norm.out};
  const Node *router = nullptr, *repeat = nullptr;
  for (size_t i = 0; i < rows.size() && i < 8; ++i) {
    for (const Node *c : im.consumers(rows[i])) {
      if (im.is(*c, "Reshape")) {
        if (Error e = checkInts(c->input(1), {-1, H}, *c, "its shape"))
          return e;
        im.raise(*c);
        rows.push_back(c->output(0));
      } else if (im.is(*c, "Gemm") || im.is(*c, "MatMul")) {
        if (router)
          return fail(*c, "a second router of the experts' norm");
        router = c;
      } else if (im.is(*c, "Unsqueeze")) {
        if (repeat)
          return fail(*c, "a second repeat of the tokens");
        repeat = c;
      } else {
        return fail(*c, "is not part of the experts' pattern moe-compile "
                        "raises from a decomposed graph");
      }
    }
  }
  if (!router || !repeat)
    return fail(*norm.node, "the experts' norm must feed the router and the "
                            "tokens repeated top-k times");
  Expected<Importer::Linear> gate = im.matchLinear(router->output(0), "router");
  if (!gate)
    return gate.takeError();
  // Softmax(-1) -> TopK(k, -1, largest).
  Expected<const Node *> sm = onlyUser(router->output(0), *router, "a Softmax");
  if (!sm)
    return sm.takeError();
  Expected<int64_t> smAxis = im.intAttr(**sm, "axis", -1);
  if (!smAxis)
    return smAxis.takeError();
  if (!im.is(**sm, "Softmax"))
    return fail(**sm, "expected the router's Softmax");
  if (*smAxis != -1 && *smAxis != 1)
    return fail(**sm, "the router's Softmax must be over the experts (axis "
                      "-1), got axis " +
                          Twine(*smAxis));
  im.raise(**sm);
  Expected<const Node *> topk = onlyUser((*sm)->output(0), **sm, "a TopK");
  if (!topk)
    return topk.takeError();
  const Node &tk = **topk;
  if (!im.is(tk, "TopK") || tk.output_size() != 2)
    return fail(tk, "expected the router's TopK");
  Expected<int64_t> tkAxis = im.intAttr(tk, "axis", -1),
                    largest = im.intAttr(tk, "largest", 1);
  if (Error e = firstErrors(tkAxis, largest))
    return e;
  if (*largest != 1)
    return fail(tk, "the router's TopK must take the largest (largest = 1)");
  if (*tkAxis != -1 && *tkAxis != 1)
    return fail(tk, "the router's TopK must be over the experts (axis -1)");
  Expected<const EvalTensor *> kt = eval(tk.input(1), kShapeLengths[0]);
  if (!kt)
    return kt.takeError();
  if ((*kt)->kind != EvalTensor::Int || (*kt)->numel() != 1)
    return fail(tk, "its k must be one integer");
  int64_t k = (*kt)->ints[0];
  im.raise(tk);
  // Renormalised: Div(values, ReduceSum(values, -1, keepdims)).
  StringRef weights = tk.output(0);
  bool renormalize = false;
  std::vector<const Node *> vu = im.consumers(weights);
  const Node *sum = nullptr, *div = nullptr;
  for (const Node *c : vu)
    (im.is(*c, "ReduceSum") ? sum : im.is(*c, "Div") ? div : sum) = c;
  if (vu.size() == 2 && sum && div && im.is(*sum, "ReduceSum")) {
    Expected<std::vector<int64_t>> axes = axesOf(*sum, 1);
    if (!axes)
      return axes.takeError();
    Expected<int64_t> keep = im.intAttr(*sum, "keepdims", 1);
    if (!keep)
      return keep.takeError();
    if ((*axes != std::vector<int64_t>{-1} &&
         *axes != std::vector<int64_t>{1}) ||
        *keep != 1 || div->input(0) != weights ||
        div->input(1) != sum->output(0))
      return fail(*div, "expected the routing weights divided by their sum");
    im.raise(*sum);
    im.raise(*div);
    renormalize = true;
    weights = div->output(0);
  } else if (vu.size() != 1) {
    return fail(tk, "its values must be renormalised (Div by their "
                    "ReduceSum) or used as they are");
  }
  // The expert ids: Reshape [-1] -> Unsqueeze [-1] -> GatherND of the
  // stacked weights.
  Expected<const Node *> idsReshape =
      nextOp(tk.output(1), tk, "a Reshape of the expert ids", "Reshape",
             "expected a Reshape of the expert ids to [-1]");
  if (!idsReshape)
    return idsReshape.takeError();
  if (Error e =
          checkInts((*idsReshape)->input(1), {-1}, **idsReshape, "its shape"))
    return e;
  im.raise(**idsReshape);
  Expected<const Node *> idsUnsq =
      onlyUser((*idsReshape)->output(0), **idsReshape, "an Unsqueeze");
  if (!idsUnsq)
    return idsUnsq.takeError();
  Expected<std::vector<int64_t>> ua = axesOf(**idsUnsq, 1);
  if (!ua)
    return ua.takeError();
  if (!im.is(**idsUnsq, "Unsqueeze") ||
      (*ua != std::vector<int64_t>{-1} && *ua != std::vector<int64_t>{1}))
    return fail(**idsUnsq, "expected an Unsqueeze [-1] of the expert ids");
  im.raise(**idsUnsq);
  StringRef ids = (*idsUnsq)->output(0);
  std::vector<const Node *> gathers = im.consumers(ids);
  if (gathers.size() != 2 || llvm::any_of(gathers, [&](const Node *g) {
        return !im.is(*g, "GatherND") || g->input(1) != ids ||
               !im.initializer(g->input(0));
      }))
    return fail(**idsUnsq, "the expert ids must feed two GatherND of stacked "
                           "expert weights (gate_up, down)");
  for (const Node *g : gathers) {
    Expected<int64_t> b = im.intAttr(*g, "batch_dims", 0);
    if (!b)
      return b.takeError();
    if (*b != 0)
      return fail(*g, "batch_dims must be 0");
  }
  // The repeated tokens: Unsqueeze [1] -> Expand [1, k, 1] -> Reshape
  // [-1, H] -> Unsqueeze [-1].
  Expected<std::vector<int64_t>> ra = axesOf(*repeat, 1);
  if (!ra)
    return ra.takeError();
  if (*ra != std::vector<int64_t>{1})
    return fail(*repeat, "expected the tokens' Unsqueeze at axis 1");
  im.raise(*repeat);
  Expected<const Node *> ex =
      nextOp(repeat->output(0), *repeat, "Expand", "Expand",
             "expected the tokens repeated k times (Expand)");
  if (!ex)
    return ex.takeError();
  if (Error e = checkInts((*ex)->input(1), {1, k, 1}, **ex, "its shape"))
    return e;
  im.raise(**ex);
  Expected<const Node *> rr =
      nextOp((*ex)->output(0), **ex, "a Reshape", "Reshape",
             "expected the repeated tokens' Reshape to [-1, H]");
  if (!rr)
    return rr.takeError();
  if (Error e = checkInts((*rr)->input(1), {-1, H}, **rr, "its shape"))
    return e;
  im.raise(**rr);
  // A MatMul(GatherND(W), Unsqueeze(x, -1)) -> Squeeze(-1): a token slot's
  // expert applied.
  auto expertMatMul = [&](StringRef x, const Node &by,
                          const Node *&gather) -> Expected<std::string> {
    Expected<const Node *> un = onlyUser(x, by, "an Unsqueeze");
    if (!un)
      return un.takeError();
    Expected<std::vector<int64_t>> a = axesOf(**un, 1);
    if (!a)
      return a.takeError();
    if (!im.is(**un, "Unsqueeze") ||
        (*a != std::vector<int64_t>{-1} && *a != std::vector<int64_t>{2}))
      return fail(**un, "expected an Unsqueeze [-1] before an expert's "
                        "MatMul");
    im.raise(**un);
    Expected<const Node *> mm = onlyUser((*un)->output(0), **un, "a MatMul");
    if (!mm)
      return mm.takeError();
    if (!im.is(**mm, "MatMul") || (*mm)->input(1) != (*un)->output(0))
      return fail(**mm, "expected an expert's MatMul(W[ids], x)");
    gather = im.producer(stripCasts((*mm)->input(0)));
    if (!gather || llvm::find(gathers, gather) == gathers.end())
      return fail(**mm, "its weights must be a GatherND of the expert ids");
    raiseCasts((*mm)->input(0));
    im.raise(**mm);
    im.raise(*gather);
    Expected<const Node *> sq = onlyUser((*mm)->output(0), **mm, "a Squeeze");
    if (!sq)
      return sq.takeError();
    Expected<std::vector<int64_t>> sa = axesOf(**sq, 1);
    if (!sa)
      return sa.takeError();
    if (!im.is(**sq, "Squeeze") ||
        (*sa != std::vector<int64_t>{-1} && *sa != std::vector<int64_t>{2}))
      return fail(**sq, "expected a Squeeze [-1] after an expert's MatMul");
    im.raise(**sq);
    return (*sq)->output(0);
  };
  const Node *gateUpGather = nullptr, *downGather = nullptr;
  Expected<std::string> gu = expertMatMul((*rr)->output(0), **rr, gateUpGather);
  if (!gu)
    return gu.takeError();
  const wire::TensorProto *gateUp = im.initializer(gateUpGather->input(0));
  if (gateUp->dims_size() != 3 || gateUp->dims(2) != H || gateUp->dims(1) % 2)
    return fail(*gateUpGather, "the experts' gate_up weight must be [E, 2·I, "
                               "H], got " +
                                   shapeText(gateUp->dims()));
  int64_t E = gateUp->dims(0), I = gateUp->dims(1) / 2;
  if (E < 1 || E > 1024 || I < 1)
    return fail(*gateUpGather, "the experts' gate_up weight must be [E, 2·I, "
                               "H] with 1 <= E <= 1024 and I >= 1, got " +
                                   shapeText(gateUp->dims()));
  // Split into gate and up halves.
  Expected<const Node *> split = onlyUser(*gu, *gateUpGather, "a Split");
  if (!split)
    return split.takeError();
  const Node &sp = **split;
  if (!im.is(sp, "Split") || sp.output_size() != 2)
    return fail(sp, "expected the Split of gate_up into two halves");
  Expected<int64_t> spAxis = im.intAttr(sp, "axis", 0);
  if (!spAxis)
    return spAxis.takeError();
  if (*spAxis != 1 && *spAxis != -1)
    return fail(sp, "must split the features (axis 1)");
  if (!sp.input(1).empty()) {
    if (Error e = checkInts(sp.input(1), {I, I}, sp, "its split"))
      return e;
  } else if (const wire::AttributeProto *a = im.attr(sp, "split")) {
    if (a->ints_size() != 2 || a->ints(0) != I || a->ints(1) != I)
      return fail(sp, "its split must be [" + Twine(I) + ", " + Twine(I) +
                          "] (gate rows, then up rows)");
  } else {
    Expected<int64_t> parts = im.intAttr(sp, "num_outputs", 2);
    if (!parts)
      return parts.takeError();
    if (*parts != 2)
      return fail(sp, "must split into two halves");
  }
  im.raise(sp);
  // silu(gate) · up: Mul(g, Sigmoid(g)), then Mul(·, up).
  StringRef g = sp.output(0), up = sp.output(1);
  std::vector<const Node *> gu2 = im.consumers(g);
  const Node *sig = nullptr, *siluMul = nullptr;
  for (const Node *c : gu2)
    (im.is(*c, "Sigmoid") ? sig : siluMul) = c;
  if (gu2.size() != 2 || !sig || !siluMul || !im.is(*siluMul, "Mul") ||
      other(*siluMul, g) != sig->output(0) ||
      im.consumers(sig->output(0)).size() != 1)
    return fail(sp, "its first half (gate) must feed silu: Mul(g, "
                    "Sigmoid(g)); the second half is up");
  im.raise(*sig);
  im.raise(*siluMul);
  Expected<const Node *> gm =
      onlyUser(siluMul->output(0), *siluMul, "a Mul by up");
  if (!gm)
    return gm.takeError();
  if (!im.is(**gm, "Mul") || other(**gm, siluMul->output(0)) != up ||
      im.consumers(up).size() != 1)
    return fail(**gm, "expected silu(gate) · up");
  im.raise(**gm);
  Expected<std::string> dn = expertMatMul((*gm)->output(0), **gm, downGather);
  if (!dn)
    return dn.takeError();
  if (downGather == gateUpGather)
    return fail(*downGather, "gate_up and down must be two weights");
  const wire::TensorProto *down = im.initializer(downGather->input(0));
  if (down->dims_size() != 3 || down->dims(0) != E || down->dims(1) != H ||
      down->dims(2) != I)
    return fail(*downGather, "the experts' down weight must be [" + Twine(E) +
                                 ", " + Twine(H) + ", " + Twine(I) + "], got " +
                                 shapeText(down->dims()));
  // · the routing weight: Mul(y, Unsqueeze(Reshape(w, [-1]), -1)).
  Expected<const Node *> wm = onlyUser(*dn, *downGather, "a Mul");
  if (!wm)
    return wm.takeError();
  StringRef wv = other(**wm, *dn);
  const Node *wu = wv.empty() ? nullptr : im.producer(stripCasts(wv));
  const Node *wr = wu && wu->input_size() >= 1
                       ? im.producer(stripCasts(wu->input(0)))
                       : nullptr;
  if (!im.is(**wm, "Mul") || !wu || !im.is(*wu, "Unsqueeze") || !wr ||
      !im.is(*wr, "Reshape") || stripCasts(wr->input(0)) != weights)
    return fail(**wm, "expected an expert's output times its routing weight "
                      "(Unsqueeze(Reshape(weights, [-1]), -1))");
  if (Error e = checkInts(wr->input(1), {-1}, *wr, "its shape"))
    return e;
  Expected<std::vector<int64_t>> wa = axesOf(*wu, 1);
  if (!wa)
    return wa.takeError();
  if (*wa != std::vector<int64_t>{-1} && *wa != std::vector<int64_t>{1})
    return fail(*wu, "expected an Unsqueeze [-1] of the routing weights");
  raiseCasts(wv);
  raiseCasts(wu->input(0));
  raiseCasts(wr->input(0));
  im.raise(*wu);
  im.raise(*wr);
  im.raise(**wm);
  // Reshape [-1, k, H] -> ReduceSum(1) -> Reshape [1, -1, H].
  Expected<const Node *> r3 =
      nextOp((*wm)->output(0), **wm, "a Reshape", "Reshape",
             "expected the token slots' Reshape to [-1, k, H]");
  if (!r3)
    return r3.takeError();
  if (Error e = checkInts((*r3)->input(1), {-1, k, H}, **r3, "its shape"))
    return e;
  im.raise(**r3);
  Expected<const Node *> rsum =
      nextOp((*r3)->output(0), **r3, "a ReduceSum", "ReduceSum",
             "expected the sum over the k experts");
  if (!rsum)
    return rsum.takeError();
  Expected<std::vector<int64_t>> sa = axesOf(**rsum, 1);
  if (!sa)
    return sa.takeError();
  Expected<int64_t> keep = im.intAttr(**rsum, "keepdims", 1);
  if (!keep)
    return keep.takeError();
  if (*sa != std::vector<int64_t>{1} || *keep != 0)
    return fail(**rsum, "expected the sum over the k experts (axes [1], "
                        "keepdims 0)");
  im.raise(**rsum);
  Expected<const Node *> back =
      nextOp((*rsum)->output(0), **rsum, "a Reshape", "Reshape",
             "expected the experts' output Reshape'd to [1, -1, "
             "H]");
  if (!back)
    return back.takeError();
  if (Error e =
          checkInts((*back)->input(1), {1, kSeq, H}, **back, "its shape", true))
    return e;
  im.raise(**back);

  int64_t l = int64_t(im.layers.size()) - 1;
  if (l == 0) {
    spec().numExperts = E;
    spec().intermediateSize = I;
    spec().topK = k;
    spec().normTopKProb = renormalize;
  } else if (spec().numExperts != E || spec().intermediateSize != I ||
             spec().topK != k || spec().normTopKProb != renormalize) {
    return fail(tk, "experts, their size, k and the renormalisation must be "
                    "the same in every layer");
  }
  if (k < 1 || k > E)
    return fail(tk, "k " + Twine(k) + " must be in [1, " + Twine(E) + "]");
  RaisedModel::Layer &layer = im.layers.back();
  if (Error e = im.addLinear(layer.router = gate->weight, *gate, {E, H},
                             *router, "router"))
    return e;
  std::string gu3 = gateUp->name(), dn3 = down->name();
  if (Error e = im.addWeight(gu3, gu3, {E, 2 * I, H}, *gateUpGather, "gate_up"))
    return e;
  if (Error e = im.addWeight(dn3, dn3, {E, H, I}, *downGather, "down"))
    return e;
  // Expert e's gate is rows [2eI, 2eI + I) of gate_up seen as [2EI, H], its
  // up the next I rows; its down rows [eH, eH + H) of down as [EH, I].
  for (int64_t e = 0; e < E; ++e) {
    std::string idx = "[" + std::to_string(e) + "]";
    layer.gate.push_back(gu3 + idx + ".gate");
    layer.up.push_back(gu3 + idx + ".up");
    layer.down.push_back(dn3 + idx);
    (void)im.addSlice(layer.gate.back(), gu3, 2 * e * I, {I, H});
    (void)im.addSlice(layer.up.back(), gu3, (2 * e + 1) * I, {I, H});
    (void)im.addSlice(layer.down.back(), dn3, e * H, {H, I});
  }
  im.weights.erase(gu3);
  im.weights.erase(dn3);
  out = (*back)->output(0);
  return Error::success();
}

// --- Layers
// -----------------------------------------------------------------------

Error DecomposedRaiser::matchLayer(StringRef h, std::string &next) {
  Expected<Norm> attnNorm = matchNorm(h, "attention");
  if (!attnNorm)
    return attnNorm.takeError();
  im.layers.emplace_back();
  if (Error e = im.addWeight(im.layers.back().attnNorm = attnNorm->weight,
                             attnNorm->weight, {spec().hiddenSize},
                             *attnNorm->node, "norm"))
    return e;
  std::string attn;
  if (Error e = matchAttention(*attnNorm, attn))
    return e;
  Expected<std::string> h2 = im.matchAdd(h, attn, "after attention");
  if (!h2)
    return h2.takeError();
  Expected<Norm> ffnNorm = matchNorm(*h2, "experts");
  if (!ffnNorm)
    return ffnNorm.takeError();
  if (Error e = im.addWeight(im.layers.back().ffnNorm = ffnNorm->weight,
                             ffnNorm->weight, {spec().hiddenSize},
                             *ffnNorm->node, "norm"))
    return e;
  std::string moe;
  if (Error e = matchMoE(*ffnNorm, moe))
    return e;
  Expected<std::string> h3 = im.matchAdd(*h2, moe, "after the experts");
  if (!h3)
    return h3.takeError();
  next = *h3;
  return Error::success();
}

Error DecomposedRaiser::run(StringRef h0) {
  // The token ids: the embedding Gather's index, a graph input.
  const Node *gather = im.producer(h0);
  ids = gather->input(1);
  // Around decomposed norms and attention, the experts may be ONNX
  // Runtime's fused op; no other fused op (a mix of the attentions or the
  // norms is neither form).
  for (const Node &n : im.graph.node())
    if (n.domain() == "com.microsoft" && !isFusedExperts(n))
      return fail(n, "a com.microsoft op other than MoE or QMoE in a graph "
                     "whose first RMS norm is decomposed (Pow, ReduceMean, "
                     "...): moe-compile raises ONNX Runtime GenAI's fused "
                     "graph, or standard ops with the experts decomposed or "
                     "fused, not other mixes (docs/frontends.md)");
  std::string h = h0.str();
  constexpr int64_t kMaxLayers = 1024;
  while (!isFinal(h)) {
    if (int64_t(im.layers.size()) >= kMaxLayers)
      return error(im.path + ": more than " + Twine(kMaxLayers) + " layers");
    std::string next;
    if (Error e = matchLayer(h, next))
      return e;
    h = next;
  }
  if (im.layers.empty())
    return error(im.path + ": the graph has no decoder layers");
  Expected<Norm> norm = matchNorm(h, "final norm");
  if (!norm)
    return norm.takeError();
  im.finalNorm = norm->weight;
  if (Error e = im.addWeight(im.finalNorm, im.finalNorm, {spec().hiddenSize},
                             *norm->node, "norm"))
    return e;
  // lm_head, its output maybe cast to the graph's output type.
  StringRef logits = im.graph.output(0).name();
  if (const Node *p = im.producer(logits); p && isCast(*p)) {
    im.raise(*p);
    logits = p->input(0);
  }
  Expected<Importer::Linear> head = im.matchLinear(logits, "lm_head");
  if (!head)
    return head.takeError();
  if (head->x != norm->out)
    return error(im.path + ": the lm_head's input is not the final norm");
  // Tied when its weight is the embedding table as stored (as
  // ONNXModel.cpp's fused path decides).
  im.lmHead = head->weight;
  spec().tieWordEmbeddings = im.lmHead == im.embedding && !head->transposed;
  if (im.lmHead == im.embedding && head->transposed)
    im.lmHead = im.embedding + " (transposed)";
  if (!spec().tieWordEmbeddings)
    if (Error e = im.addLinear(im.lmHead, *head,
                               {spec().vocabSize, spec().hiddenSize},
                               *im.producer(logits), "lm_head"))
      return e;
  // The graph states no position limit (RoPE is computed for any
  // position): the default context, which --max-seq overrides.
  spec().maxPositions = kDecomposedMaxPositions;
  return Error::success();
}

Error Importer::raiseDecomposed(StringRef h) {
  return DecomposedRaiser(*this).run(h);
}

} // namespace mlir::moe::onnxfe::raising
