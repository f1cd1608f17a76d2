//===- EmitCuda.cpp - CUDA target: moe IR to kernels + host plan -*- C++
//-*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "compiler/cuda/EmitCuda.h"

#include "llvm/ADT/StringExtras.h"

#include <algorithm>

using namespace mlir;
using namespace mlir::moe;

namespace {

/// CUDA type of a weight element type.
StringRef cudaType(Type t) {
  if (t.isF16())
    return "__half";
  if (t.isBF16())
    return "__nv_bfloat16";
  return "float";
}

Type elementType(Value v) {
  return cast<RankedTensorType>(v.getType()).getElementType();
}

class CudaEmitter : public HostPlanEmitter {
public:
  CudaEmitter(ModuleOp module, const EmitOptions &options)
      : HostPlanEmitter(module, options, "CUDA") {}

  std::string device;
  std::vector<std::string> kernelNames;
  int64_t workspace() const { return workspaceFloats; }
  int64_t arenaFloatsPerToken() const { return arenaPerToken; }

private:
  LogicalResult emitOp(Operation *op) override;

  /// The kernel `kind_<i>` whose parameters are `params` and whose body is
  /// `call;`, declared once per distinct specialisation. Returns its index.
  size_t kernel(StringRef kind, unsigned threads, StringRef params,
                const Twine &call);
  /// One launch in `forward`. `args` are C++ lvalues (or, for `temps`,
  /// initialisers of locals declared for the launch).
  void launch(size_t kernel, const Twine &gridX, const Twine &gridY,
              unsigned threads, ArrayRef<std::string> args);
  /// A local constant for a launch argument; returns its name.
  std::string constant(StringRef type, const Twine &value);

  /// What a moe.linear or moe.grouped_matmul multiplies.
  struct Matmul {
    SmallVector<Value> weights; // expert-major: e * parts + part
    int64_t rowsA = 0, rowsB = 0, in = 0, experts = 1, k = 1;
    bool gather = false, grouped = false, silu = false;
    /// Only the launch for a chunk of more than kCudaDecodeMaxTokens
    /// (the caller has emitted the decode one).
    bool prefillOnly = false;
    std::string input, perm = "null", offsets = "null", output,
                       residual = "null";
  };
  /// The gemv (decode) kernel, and the tensor-core kernel (prefill) where
  /// the weights allow it.
  LogicalResult emitMatmul(Operation *op, const Matmul &m);
  /// moe.fused_linear: one gemvMulti launch for a decode step (up to three
  /// projections, RoPE applied as they are stored), each projection's own
  /// kernel (and RoPE in place) for a prefill chunk.
  LogicalResult emitFusedLinear(FusedLinearOp op);
  /// The rope kernel over `in` into `out` (width `w`, heads of `headDim`).
  void emitRope(StringRef in, StringRef pos, double theta, int64_t w,
                int64_t headDim, StringRef out);

  llvm::raw_string_ostream dev{device};
  llvm::StringMap<size_t> kernelIndex;
  std::vector<std::string> locals;
};

size_t CudaEmitter::kernel(StringRef kind, unsigned threads, StringRef params,
                           const Twine &call) {
  std::string body = call.str();
  std::string key = (params + "|" + body).str();
  auto it = kernelIndex.find(key);
  if (it != kernelIndex.end())
    return it->second;
  std::string name = (kind + "_" + Twine(kernelNames.size())).str();
  dev << "__global__ void __launch_bounds__(" << threads << ") " << name << "("
      << params << ") {\n  " << body << ";\n}\n\n";
  kernelIndex[key] = kernelNames.size();
  kernelNames.push_back(name);
  return kernelNames.size() - 1;
}

std::string CudaEmitter::constant(StringRef type, const Twine &value) {
  std::string name = "c" + std::to_string(locals.size());
  locals.push_back(
      ("    const " + type + " " + name + " = " + value + ";\n").str());
  return name;
}

void CudaEmitter::launch(size_t kernel, const Twine &gridX, const Twine &gridY,
                         unsigned threads, ArrayRef<std::string> args) {
  out << "  {\n";
  for (const std::string &l : locals)
    out << l;
  locals.clear();
  out << "    void *args[] = {";
  for (auto [i, a] : llvm::enumerate(args))
    out << (i ? ", " : "") << "(void *)&" << a;
  out << "};\n    ex->launch(ex->device, " << kernel << ", " << gridX << ", "
      << gridY << ", " << threads << ", args); // " << kernelNames[kernel]
      << "\n  }\n";
}

LogicalResult CudaEmitter::emitMatmul(Operation *op, const Matmul &m) {
  int64_t parts = m.rowsB > 0 ? 2 : 1;
  // The output width: the stacked parts, or one part after silu(gate) * up.
  int64_t n = m.silu ? m.rowsA : m.rowsA + m.rowsB;
  Type typeA = elementType(m.weights.front());
  Type typeB = elementType(m.weights[parts - 1]);
  int64_t numPtrs = int64_t(m.weights.size());
  std::string ptrs = "p" + std::to_string(locals.size());
  std::string table;
  for (auto [i, w] : llvm::enumerate(m.weights))
    table += (i ? ", " : "") + weight(w);
  locals.push_back("    const struct { const void *p[" +
                   std::to_string(numPtrs) + "]; } " + ptrs + " = {{" + table +
                   "}};\n");
  std::string tokens = constant("int", "n");
  auto flag = [](bool b) { return b ? "true" : "false"; };
  std::string common =
      (Twine(m.rowsA) + ", " + Twine(m.rowsB) + ", " + Twine(m.in) + ", " +
       Twine(m.experts) + ", " + Twine(m.k) + ", " + flag(m.gather) + ", " +
       flag(m.grouped) + ", " + flag(m.silu) + ", " + Twine(numPtrs))
          .str();
  std::string params = "const float *x, const int32_t *perm, const int32_t "
                       "*offsets, const __grid_constant__ moert::cuda::Ptrs<" +
                       std::to_string(numPtrs) +
                       "> w, int n, float *out, const float *res";
  StringRef kind = m.grouped ? "grouped_matmul" : "linear";
  std::vector<std::string> args = {m.input, m.perm,   m.offsets, ptrs,
                                   tokens,  m.output, m.residual};
  auto gemv = [&] {
    return kernel((kind + "_gemv").str(), 256, params,
                  "moert::cuda::gemv<" + cudaType(typeA) + ", " +
                      cudaType(typeB) + ", " + common +
                      ">(x, perm, offsets, w, n, out, res)");
  };
  bool tensorCores =
      typeA == typeB && !typeA.isF32() && m.in % 64 == 0 && n % 4 == 0;
  // Grouped gemv: a block row per expert that has rows, at most n * k.
  std::string groups = m.grouped ? "cmin(" + std::to_string(m.experts) +
                                       ", n * " + std::to_string(m.k) + ")"
                                 : "1";
  if (!tensorCores) {
    launch(gemv(), "cdiv(" + Twine(n) + ", 8)", groups, 256, args);
    return success();
  }
  size_t mma = kernel((kind + "_mma").str(), 256, params,
                      "moert::cuda::gemmMma<" + cudaType(typeA) + ", " +
                          common + ">(x, perm, offsets, w, n, out, res)");
  if (!m.prefillOnly) {
    std::vector<std::string> saved = locals;
    out << "  if (n <= " << kCudaDecodeMaxTokens << ")\n";
    launch(gemv(), "cdiv(" + Twine(n) + ", 8)", groups, 256, args);
    out << "  else\n";
    locals = saved;
  }
  // Grouped: a partial tile per expert at most, beyond the full ones.
  std::string tiles = m.grouped ? "cdiv(n * " + std::to_string(m.k) +
                                      ", 64) + " + std::to_string(m.experts)
                                : "cdiv(n, 64)";
  // Tiles of 128 features, or of 64 gate and 64 up rows with silu.
  launch(mma, tiles, "cdiv(" + Twine(n) + ", " + (m.silu ? "64" : "128") + ")",
         256, args);
  return success();
}

void CudaEmitter::emitRope(StringRef in, StringRef pos, double theta, int64_t w,
                           int64_t headDim, StringRef out) {
  std::string th = constant("double", cppDouble(theta));
  std::string tokens = constant("int", "n");
  size_t k = kernel("rope", 256,
                    "const float *x, const int32_t *pos, double theta, int "
                    "n, float *out",
                    "moert::cuda::rope<" + Twine(w) + ", " + Twine(headDim) +
                        ">(x, pos, theta, n, out)");
  launch(k, "cdiv(n * " + Twine(w / 2) + ", 256)", "1", 256,
         {in.str(), pos.str(), th, tokens, out.str()});
}

LogicalResult CudaEmitter::emitFusedLinear(FusedLinearOp f) {
  int64_t in = width(f.getInput());
  SmallVector<std::string> outs;
  for (Value r : f.getResults())
    outs.push_back(allocate(r));
  size_t parts = f.getWeights().size();
  out << "  // moe.fused_linear of " << parts << " weights\n";
  auto part = [&](size_t i) {
    Matmul m;
    m.weights = {f.getWeights()[i]};
    m.rowsA = cast<RankedTensorType>(f.getWeights()[i].getType()).getDimSize(0);
    m.in = in, m.input = name(f.getInput()), m.output = outs[i];
    m.prefillOnly = parts <= 3;
    return m;
  };
  if (parts <= 3) {
    // Widths, types and RoPE of three parts (a missing third: width 0).
    SmallVector<int64_t> widths;
    SmallVector<std::string> types, table, dests, ropes;
    int64_t items = 0; // warps: a feature, or a rotated pair of them
    for (size_t i = 0; i < 3; ++i) {
      Value w = f.getWeights()[std::min(i, parts - 1)];
      bool rope = i < parts && f.hasRope(int64_t(i));
      widths.push_back(i < parts ? part(i).rowsA : 0);
      items += rope ? widths.back() / 2 : widths.back();
      types.push_back(cudaType(elementType(w)).str());
      table.push_back(i < parts ? weight(w) : "nullptr");
      dests.push_back(i < parts ? outs[i] : "nullptr");
      ropes.push_back(rope ? "true" : "false");
    }
    bool anyRope = f.getRope().has_value();
    std::string ptrs = "p" + std::to_string(locals.size());
    locals.push_back("    const struct { const void *p[3]; } " + ptrs +
                     " = {{" + llvm::join(table, ", ") + "}};\n");
    std::string dest = "o" + std::to_string(locals.size());
    locals.push_back("    const struct { float *p[3]; } " + dest + " = {{" +
                     llvm::join(dests, ", ") + "}};\n");
    std::string tokens = constant("int", "n");
    std::string theta = constant(
        "double", cppDouble(anyRope ? f.getThetaAttr().getValueAsDouble() : 0));
    std::string pos = anyRope ? name(f.getPositions()) : "null";
    int64_t headDim = anyRope ? int64_t(*f.getHeadDim()) : 2;
    size_t k = kernel(
        "fused_linear_gemv", 256,
        "const float *x, const __grid_constant__ moert::cuda::Ptrs<3> w, int "
        "n, const __grid_constant__ moert::cuda::Outs<3> out, const int32_t "
        "*pos, double theta",
        "moert::cuda::gemvMulti<" + types[0] + ", " + types[1] + ", " +
            types[2] + ", " + Twine(in) + ", " + Twine(widths[0]) + ", " +
            Twine(widths[1]) + ", " + Twine(widths[2]) + ", " + ropes[0] +
            ", " + ropes[1] + ", " + ropes[2] + ", " + Twine(headDim) +
            ">(x, w, n, out, pos, theta)");
    out << "  if (n <= " << kCudaDecodeMaxTokens << ") {\n";
    launch(k, "cdiv(" + Twine(items) + ", 8)", "1", 256,
           {name(f.getInput()), ptrs, tokens, dest, pos, theta});
    out << "  } else {\n";
  }
  for (size_t i = 0; i < parts; ++i) {
    if (failed(emitMatmul(f, part(i))))
      return failure();
    if (f.hasRope(int64_t(i)))
      emitRope(outs[i], name(f.getPositions()),
               f.getThetaAttr().getValueAsDouble(), part(i).rowsA,
               int64_t(*f.getHeadDim()), outs[i]);
  }
  if (parts <= 3)
    out << "  }\n";
  return success();
}

LogicalResult CudaEmitter::emitOp(Operation *op) {
  if (auto e = dyn_cast<EmbeddingOp>(op)) {
    int64_t h = width(e.getResult());
    std::string table = weight(e.getTable()), ids = name(e.getIds());
    std::string o = allocate(e.getResult());
    StringRef t = cudaType(elementType(e.getTable()));
    size_t k = kernel("embedding", 256,
                      "const void *table, const int32_t *ids, float *out",
                      "moert::cuda::embedding<" + t + ", " + Twine(h) +
                          ">(static_cast<const " + t + " *>(table), ids, out)");
    launch(k, "n", "1", 256, {table, ids, o});
    return success();
  }
  if (auto r = dyn_cast<RMSNormOp>(op)) {
    int64_t h = width(r.getResult());
    std::string in = name(r.getInput()), w = weight(r.getWeight());
    std::string eps =
        constant("float", cppFloat(r.getEpsilon().convertToDouble()));
    std::string o = allocate(r.getResult());
    StringRef t = cudaType(elementType(r.getWeight()));
    size_t k = kernel("rms_norm", 256,
                      "const float *x, const void *w, float eps, float *out",
                      "moert::cuda::rmsNorm<" + t + ", " + Twine(h) +
                          ">(x, static_cast<const " + t + " *>(w), eps, out)");
    launch(k, "n", "1", 256, {in, w, eps, o});
    return success();
  }
  if (auto l = dyn_cast<LinearOp>(op)) {
    ArrayRef<int64_t> w = l.getWeight().getType().getShape();
    std::string in = name(l.getInput());
    std::string o = allocate(l.getResult());
    Matmul m;
    m.weights = {l.getWeight()};
    m.rowsA = w[0], m.in = w[1], m.input = in, m.output = o;
    if (l.getResidual())
      m.residual = name(l.getResidual());
    out << "  // moe.linear " << w[0] << "x" << w[1]
        << (l.getResidual() ? " + residual" : "") << "\n";
    return emitMatmul(op, m);
  }
  if (auto f = dyn_cast<FusedLinearOp>(op))
    return emitFusedLinear(f);
  if (auto r = dyn_cast<RoPEOp>(op)) {
    std::string o = allocate(r.getResult());
    emitRope(name(r.getInput()), name(r.getPositions()),
             r.getTheta().convertToDouble(), width(r.getResult()),
             r.getHeadDim(), o);
    return success();
  }
  if (auto a = dyn_cast<AttentionOp>(op)) {
    const Cache *c = planCache(a);
    if (!c)
      return failure();
    std::string q = name(a.getQuery()), key = name(a.getKey()),
                v = name(a.getValue()), cache = name(a.getCache());
    std::string kc = cache + ".k", vc = cache + ".v";
    std::string o = allocate(a.getResult());
    std::string shape =
        Twine(a.getNumHeads()).str() + ", " + Twine(c->kvHeads).str() + ", " +
        Twine(c->headDim).str() + ", " + Twine(c->capacity).str() + ", " +
        Twine(c->window).str();
    // Decode splits the keys over up to 32 blocks per head: one per 256
    // keys the cache can hold for a query.
    int64_t span = c->window ? std::min(c->window, c->capacity) : c->capacity;
    int64_t splits = std::clamp<int64_t>((span + 255) / 256, 1, 32);
    workspaceFloats = std::max(workspaceFloats, kCudaDecodeMaxTokens *
                                                    int64_t(a.getNumHeads()) *
                                                    splits * (c->headDim + 2));
    std::string io = "const float *q, const float *k, const float *v, const "
                     "float *kc, const float *vc, const int32_t *pos, ";
    size_t decode =
        kernel("attention_decode", 128, io + "float scale, float *ws",
               "moert::cuda::attentionDecode<" + shape + ", " + Twine(splits) +
                   ">(q, k, v, kc, vc, pos, scale, ws)");
    size_t finish = kernel(
        "attention_decode_finish", 128,
        "const float *ws, const float *k, const float *v, const int32_t *pos, "
        "int n, float *out, float *kc, float *vc",
        "moert::cuda::attentionDecodeFinish<" + Twine(a.getNumHeads()) + ", " +
            Twine(c->kvHeads) + ", " + Twine(c->headDim) + ", " +
            Twine(c->capacity) + ", " + Twine(splits) +
            ">(ws, k, v, pos, n, out, kc, vc)");
    size_t prefill =
        kernel("attention_prefill", 128, io + "int n, float scale, float *out",
               "moert::cuda::attentionPrefill<" + shape +
                   ">(q, k, v, kc, vc, pos, n, scale, out)");
    // Both variants append the chunk to the cache only after every query
    // read the old slots.
    size_t append = kernel(
        "kv_append", 256,
        "const float *k, const float *v, const int32_t *pos, int n, float "
        "*kc, float *vc",
        "moert::cuda::kvAppend<" + Twine(c->kvHeads) + ", " +
            Twine(c->headDim) + ", " + Twine(c->capacity) +
            ">(k, v, pos, n, kc, vc)");
    out << "  // moe.attention (" << (c->window ? "rolling" : "full")
        << " cache, " << c->capacity << " slots; decode in " << splits
        << " key splits)\n";
    std::string scale = constant("float", cppFloat(a.getEffectiveScale()));
    std::vector<std::string> saved = locals;
    out << "  if (n <= " << kCudaDecodeMaxTokens << ") {\n";
    launch(decode, Twine(a.getNumHeads() * splits), "n", 128,
           {q, key, v, kc, vc, "positions", scale, "workspace"});
    std::string tokens = constant("int", "n");
    launch(finish, Twine(a.getNumHeads()), "n", 128,
           {"workspace", key, v, "positions", tokens, o, kc, vc});
    out << "  } else {\n";
    locals = saved;
    tokens = constant("int", "n");
    launch(prefill, Twine(a.getNumHeads()), "cdiv(n, 16)", 128,
           {q, key, v, kc, vc, "positions", tokens, scale, o});
    tokens = constant("int", "n");
    launch(append, "cdiv(n * " + Twine(c->kvHeads * c->headDim) + ", 256)", "1",
           256, {key, v, "positions", tokens, kc, vc});
    out << "  }\n";
    return success();
  }
  if (auto a = dyn_cast<AddOp>(op)) {
    int64_t w = width(a.getResult());
    std::string lhs = name(a.getLhs()), rhs = name(a.getRhs());
    std::string tokens = constant("int", "n");
    std::string o = allocate(a.getResult());
    size_t k =
        kernel("add", 256, "const float *a, const float *b, int n, float *out",
               "moert::cuda::add<" + Twine(w) + ">(a, b, n, out)");
    launch(k, "cdiv(n * " + Twine(w) + ", 256)", "1", 256,
           {lhs, rhs, tokens, o});
    return success();
  }
  if (auto r = dyn_cast<FusedRouterOp>(op)) {
    int64_t h = width(r.getInput());
    std::string in = name(r.getInput()), gate = weight(r.getGate());
    std::string w = allocate(r.getWeights());
    std::string i = allocate(r.getIndices(), /*ints=*/true);
    StringRef t = cudaType(elementType(r.getGate()));
    size_t k = kernel(
        "fused_router", 256,
        "const float *x, const void *gate, float *weights, int32_t *indices",
        "moert::cuda::fusedRouter<" + t + ", " + Twine(h) + ", " +
            Twine(r.getNumExperts()) + ", " + Twine(r.getK()) + ", " +
            (r.getScoring() == ScoringFunc::Softmax ? "true" : "false") + ", " +
            (r.getRenormalize() ? "true" : "false") +
            ">(x, static_cast<const " + t + " *>(gate), weights, indices)");
    launch(k, "n", "1", 256, {in, gate, w, i});
    return success();
  }
  if (auto p = dyn_cast<ExpertPermuteOp>(op)) {
    int64_t experts = p.getNumExperts();
    std::string indices = name(p.getIndices());
    std::string tokens = constant("int", "n");
    std::string perm = allocate(p.getPerm(), /*ints=*/true);
    std::string offsets = allocate(p.getOffsets(), /*ints=*/true);
    // A thread per expert (and one for offsets[E]), at most 1024.
    unsigned threads =
        unsigned(std::min<int64_t>((experts + 32) / 32 * 32, 1024));
    size_t k = kernel("expert_permute", threads,
                      "const int32_t *indices, int n, int32_t *perm, int32_t "
                      "*offsets",
                      "moert::cuda::expertPermute<" + Twine(experts) + ", " +
                          Twine(width(p.getIndices())) +
                          ">(indices, n, perm, offsets)");
    launch(k, "1", "1", threads, {indices, tokens, perm, offsets});
    return success();
  }
  if (auto g = dyn_cast<GroupedMatmulOp>(op)) {
    int64_t parts = g.getParts();
    if (parts > 2)
      return g.emitOpError("the CUDA target handles at most 2 parts");
    auto part = [&](int64_t i) {
      return cast<RankedTensorType>(g.getExpertWeights()[i].getType());
    };
    Matmul m;
    m.input = name(g.getInput()), m.perm = name(g.getPerm()),
    m.offsets = name(g.getOffsets());
    // The gather happens in the kernels' loads, and silu(gate) * up in
    // their stores: no scratch.
    m.output = allocate(g.getResult());
    m.weights.assign(g.getExpertWeights().begin(), g.getExpertWeights().end());
    m.rowsA = part(0).getDimSize(0);
    m.rowsB = parts == 2 ? part(1).getDimSize(0) : 0;
    m.in = width(g.getInput()), m.experts = g.getNumExperts(), m.k = g.getK();
    m.gather = g.getGather(), m.grouped = true, m.silu = g.getSiluMul();
    out << "  // moe.grouped_matmul " << g.getNumExperts() << " experts x "
        << parts << " parts" << (g.getGather() ? ", gather" : "")
        << (g.getSiluMul() ? ", silu_mul" : "") << "\n";
    return emitMatmul(op, m);
  }
  if (auto m = dyn_cast<SiluMulOp>(op)) {
    int64_t i = width(m.getResult());
    int64_t rowsPerToken = getFloatsPerToken(m.getResult()) / i;
    std::string in = name(m.getInput());
    std::string rows = constant("int", "n * " + Twine(rowsPerToken));
    std::string o = allocate(m.getResult());
    size_t k = kernel("silu_mul", 256, "const float *in, int rows, float *out",
                      "moert::cuda::siluMul<" + Twine(i) + ">(in, rows, out)");
    launch(k, "cdiv(n * " + Twine(rowsPerToken * i) + ", 256)", "1", 256,
           {in, rows, o});
    return success();
  }
  if (auto c = dyn_cast<ExpertCombineOp>(op)) {
    std::string y = name(c.getInput()), perm = name(c.getPerm()),
                w = name(c.getWeights());
    std::string residual = c.getResidual() ? name(c.getResidual()) : "null";
    std::string tokens = constant("int", "n");
    std::string o = allocate(c.getResult());
    size_t k = kernel(
        "expert_combine", 256,
        "const float *y, const int32_t *perm, const float "
        "*weights, int n, float *out, const float *res",
        "moert::cuda::expertCombine<" + Twine(width(c.getResult())) + ", " +
            Twine(width(c.getWeights())) + ">(y, perm, weights, n, out, res)");
    launch(k, "n", "1", 256, {y, perm, w, tokens, o, residual});
    return success();
  }
  if (isa<RouterOp, ExpertsOp>(op))
    return op->emitOpError("is not supported by the CUDA target, which runs "
                           "the fused expert path: compile with -O2");
  return op->emitOpError("is not supported by the CUDA target");
}

} // namespace

FailureOr<CudaProgram> mlir::moe::emitCudaProgram(ModuleOp module,
                                                  const EmitOptions &options) {
  CudaEmitter emitter(module, options);
  if (failed(emitter.run()))
    return failure();
  CudaProgram program;
  program.kernelNames = emitter.kernelNames;

  llvm::raw_string_ostream dev(program.deviceCode);
  dev << "// Generated by moe-compile (CUDA target) for model '"
      << cppComment(options.modelName) << "'. Do not edit.\n"
      << "// " << emitter.kernelNames.size()
      << " kernels, specialised to the model's shapes.\n"
      << "#include \"moert/cuda/kernels.cuh\"\n\n"
      << "extern \"C\" {\n\n"
      << emitter.device << "} // extern \"C\"\n\n"
      << "#ifdef MOERT_CUDA_EMULATOR\n"
      << "// The kernel table of the CPU emulator the tests run this file on\n"
      << "// (test/cuda-emu), in place of the fatbin.\n"
      << "static const moert_emu::Kernel kEmulatorKernels[] = {\n";
  for (const std::string &k : emitter.kernelNames)
    dev << "  moert_emu::Entry<" << k << ">::kernel(" << cppQuoted(k) << "),\n";
  dev << "};\nMOERT_EMU_IMAGE(kEmulatorKernels)\n#endif\n";

  llvm::raw_string_ostream os(program.hostPlan);
  os << "// Generated by moe-compile (CUDA target) for model '"
     << cppComment(options.modelName) << "'. Do not edit.\n"
     << "#include \"moert/program.h\"\n\n"
     << "// The fatbin nvcc built from the device code, embedded here.\n"
     << "extern \"C\" const unsigned char moert_device_image[];\n"
     << "extern \"C\" const unsigned char moert_device_image_end[];\n"
     << "#ifdef MOERT_FATBIN\n"
     << "asm(\".section .rodata\\n.balign 64\\n.globl moert_device_image\\n\"\n"
     << "    \"moert_device_image:\\n.incbin \\\"\" MOERT_FATBIN \"\\\"\\n\"\n"
     << "    \".globl moert_device_image_end\\nmoert_device_image_end:\\n\"\n"
     << "    \".previous\\n\");\n"
     << "#endif\n\n"
     << "namespace {\n\n";
  emitter.writeTables(os);
  os << "const char *const kKernels[] = {\n";
  for (const std::string &k : emitter.kernelNames)
    os << "  " << cppQuoted(k) << ",\n";
  os << "};\n\n"
     << "inline unsigned cdiv(int64_t a, int64_t b) {\n"
     << "  return unsigned((a + b - 1) / b);\n}\n"
     << "inline unsigned cmin(int64_t a, int64_t b) {\n"
     << "  return unsigned(a < b ? a : b);\n}\n\n"
     << "void forward(const moert_exec *ex, int64_t n64, const int32_t "
        "*tokens,\n"
     << "             const int32_t *positions, float *logits) {\n"
     << "  const int n = int(n64);\n"
     << "  float *arena = ex->scratch;\n"
     << "  const int64_t n_max = ex->max_tokens;\n"
     << "  const void *null = nullptr;\n";
  if (emitter.workspace())
    os << "  float *const workspace = arena + n_max * "
       << emitter.arenaFloatsPerToken() << ";\n";
  for (auto [i, source] : llvm::enumerate(emitter.weights()))
    os << "  const void *W" << i << " = ex->weights[" << i << "]; // "
       << cppComment(WeightSourceOp(source).getName()) << "\n";
  os << emitter.forwardBody() << "}\n\n";
  emitter.writeDescriptor(
      os, "MOERT_TARGET_CUDA, moert_device_image, moert_device_image_end, " +
              std::to_string(emitter.kernelNames.size()) + ", kKernels");
  return program;
}
