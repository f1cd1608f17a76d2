//===- EmitCpp.cpp - CPU target: moe IR to a C++ host plan ------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "compiler/cpu/EmitCpp.h"
#include "compiler/common/HostPlan.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

/// C++ storage type of a weight element type.
StringRef cppType(Type t) {
  if (t.isF16())
    return "moert::f16";
  if (t.isBF16())
    return "moert::bf16";
  return "float";
}

class CpuEmitter : public HostPlanEmitter {
public:
  CpuEmitter(ModuleOp module, const EmitOptions &options)
      : HostPlanEmitter(module, options, "CPU") {}

private:
  LogicalResult emitOp(Operation *op) override;
  StringRef weightType(Value v) {
    return cppType(cast<RankedTensorType>(v.getType()).getElementType());
  }
  /// result = input @ weightᵀ (+ residual).
  void emitLinear(Value input, Value weight, Value result, Value residual = {});
  int64_t nextId = 0;
};

void CpuEmitter::emitLinear(Value input, Value w, Value result,
                            Value residual) {
  ArrayRef<int64_t> shape = cast<RankedTensorType>(w.getType()).getShape();
  std::string o = allocate(result);
  out << "  moert::linear<" << weightType(w) << ", " << shape[0] << ", "
      << shape[1] << ">(pool, " << name(input) << ", " << weight(w) << ", n, "
      << o;
  if (residual)
    out << ", " << shape[0] << ", " << name(residual);
  out << ");\n";
}

LogicalResult CpuEmitter::emitOp(Operation *op) {
  if (auto e = dyn_cast<EmbeddingOp>(op)) {
    int64_t h = width(e.getResult());
    std::string o = allocate(e.getResult());
    out << "  moert::embedding<" << weightType(e.getTable()) << ", " << h
        << ">(" << weight(e.getTable()) << ", " << name(e.getIds()) << ", n, "
        << o << ");\n";
    return success();
  }
  if (auto r = dyn_cast<RMSNormOp>(op)) {
    int64_t h = width(r.getResult());
    std::string o = allocate(r.getResult());
    out << "  moert::rmsNorm<" << weightType(r.getWeight()) << ", " << h << ">("
        << name(r.getInput()) << ", " << weight(r.getWeight()) << ", "
        << cppFloat(r.getEpsilon().convertToDouble()) << ", n, " << o << ");\n";
    return success();
  }
  if (auto l = dyn_cast<LinearOp>(op)) {
    emitLinear(l.getInput(), l.getWeight(), l.getResult(), l.getResidual());
    return success();
  }
  if (auto f = dyn_cast<FusedLinearOp>(op)) {
    // One call per weight: on the CPU each is a GEMV/GEMM parallel over
    // its own weight rows already.
    for (auto [i, w, result] :
         llvm::enumerate(f.getWeights(), f.getResults())) {
      emitLinear(f.getInput(), w, result);
      // RoPE in place (each pair is read before it is written).
      if (f.hasRope(int64_t(i)))
        out << "  moert::rope<" << width(result) << ", " << *f.getHeadDim()
            << ">(" << name(result) << ", " << name(f.getPositions()) << ", "
            << cppDouble(f.getThetaAttr().getValueAsDouble()) << ", n, "
            << name(result) << ");\n";
    }
    return success();
  }
  if (auto r = dyn_cast<RoPEOp>(op)) {
    int64_t w = width(r.getResult());
    std::string o = allocate(r.getResult());
    out << "  moert::rope<" << w << ", " << r.getHeadDim() << ">("
        << name(r.getInput()) << ", " << name(r.getPositions()) << ", "
        << cppDouble(r.getTheta().convertToDouble()) << ", n, " << o << ");\n";
    return success();
  }
  if (auto a = dyn_cast<AttentionOp>(op)) {
    const Cache *cache = planCache(a);
    if (!cache)
      return failure();
    const Cache &c = *cache;
    std::string o = allocate(a.getResult());
    out << "  moert::attention<" << a.getNumHeads() << ", " << c.kvHeads << ", "
        << c.headDim << ", " << c.capacity << ", " << c.window << ">(pool, "
        << name(a.getQuery()) << ", " << name(a.getKey()) << ", "
        << name(a.getValue()) << ", " << name(a.getCache()) << ", positions, "
        << cppFloat(a.getEffectiveScale()) << ", n, " << o << ");\n";
    return success();
  }
  if (auto a = dyn_cast<AddOp>(op)) {
    int64_t w = width(a.getResult());
    std::string o = allocate(a.getResult());
    out << "  moert::add<" << w << ">(" << name(a.getLhs()) << ", "
        << name(a.getRhs()) << ", n, " << o << ");\n";
    return success();
  }
  if (auto r = dyn_cast<RouterOp>(op)) {
    int64_t k = r.getK();
    std::string w = allocate(r.getWeights());
    std::string i = allocate(r.getIndices(), /*ints=*/true);
    out << "  moert::router<" << r.getNumExperts() << ", " << k << ", "
        << (r.getScoring() == ScoringFunc::Softmax ? "true" : "false") << ", "
        << (r.getRenormalize() ? "true" : "false") << ">("
        << name(r.getLogits()) << ", n, " << w << ", " << i << ");\n";
    return success();
  }
  if (auto r = dyn_cast<FusedRouterOp>(op)) {
    int64_t k = r.getK();
    std::string w = allocate(r.getWeights());
    std::string i = allocate(r.getIndices(), /*ints=*/true);
    out << "  moert::fusedRouter<" << weightType(r.getGate()) << ", "
        << width(r.getInput()) << ", " << r.getNumExperts() << ", " << k << ", "
        << (r.getScoring() == ScoringFunc::Softmax ? "true" : "false") << ", "
        << (r.getRenormalize() ? "true" : "false") << ">(" << name(r.getInput())
        << ", " << weight(r.getGate()) << ", n, " << w << ", " << i << ");\n";
    return success();
  }
  if (auto e = dyn_cast<ExpertsOp>(op)) {
    int64_t h = width(e.getResult());
    ArrayRef<int64_t> gate =
        cast<RankedTensorType>(e.getGateWeights().front().getType()).getShape();
    int64_t inter = gate[0], k = width(e.getWeights());
    std::string id = std::to_string(nextId++);
    SmallVector<StringRef, 3> types;
    for (auto [list, suffix] :
         {std::pair<ValueRange, StringRef>{e.getGateWeights(), "g"},
          {e.getUpWeights(), "u"},
          {e.getDownWeights(), "d"}}) {
      types.push_back(weightType(list.front()));
      out << "  const " << types.back() << " *const " << suffix << id
          << "[] = {";
      for (auto [j, v] : llvm::enumerate(list))
        out << (j ? ", " : "") << weight(v);
      out << "};\n";
    }
    out << "  float *x" << id << " = arena + n_max * " << scratch(e) << ";\n";
    std::string o = allocate(e.getResult());
    out << "  moert::experts<" << types[0] << ", " << types[1] << ", "
        << types[2] << ", " << h << ", " << inter << ", " << e.getNumExperts()
        << ", " << k << ">(pool, " << name(e.getInput()) << ", "
        << name(e.getWeights()) << ", " << name(e.getIndices()) << ", g" << id
        << ", u" << id << ", d" << id << ", n, x" << id << ", " << o << ");\n";
    return success();
  }
  if (auto p = dyn_cast<ExpertPermuteOp>(op)) {
    std::string perm = allocate(p.getPerm(), /*ints=*/true);
    std::string offsets = allocate(p.getOffsets(), /*ints=*/true);
    out << "  moert::expertPermute<" << p.getNumExperts() << ", "
        << width(p.getIndices()) << ">(" << name(p.getIndices()) << ", n, "
        << perm << ", " << offsets << ");\n";
    return success();
  }
  if (auto g = dyn_cast<GroupedMatmulOp>(op)) {
    int64_t parts = g.getParts();
    if (parts > 2)
      return g.emitOpError("the CPU target handles at most 2 parts");
    auto part = [&](int64_t i) {
      return cast<RankedTensorType>(g.getExpertWeights()[i].getType());
    };
    std::string id = std::to_string(nextId++);
    out << "  const void *const gw" << id << "[] = {";
    for (auto [j, v] : llvm::enumerate(g.getExpertWeights()))
      out << (j ? ", " : "") << weight(v);
    out << "};\n";
    // Scratch (getScratchFloatsPerToken): the gathered rows, then the up
    // rows of a silu_mul GEMM.
    bool staged = g.getGather() || g.getSiluMul();
    int64_t scratchOffset = staged ? scratch(g) : 0;
    int64_t gatheredFloats = g.getGather() ? g.getK() * width(g.getInput()) : 0;
    std::string o = allocate(g.getResult());
    int64_t rowsB = parts == 2 ? part(1).getDimSize(0) : 0;
    out << "  moert::groupedMatmul<" << cppType(part(0).getElementType())
        << ", " << cppType(part(parts - 1).getElementType()) << ", "
        << part(0).getDimSize(0) << ", " << rowsB << ", " << width(g.getInput())
        << ", " << g.getNumExperts() << ", " << g.getK() << ", "
        << (g.getGather() ? "true" : "false") << ", "
        << (g.getSiluMul() ? "true" : "false") << ">(pool, "
        << name(g.getInput()) << ", " << name(g.getPerm()) << ", "
        << name(g.getOffsets()) << ", gw" << id << ", arena + n_max * "
        << scratchOffset << ", " << o;
    if (g.getSiluMul())
      out << ", arena + n_max * " << scratchOffset + gatheredFloats;
    out << ");\n";
    return success();
  }
  if (auto m = dyn_cast<SiluMulOp>(op)) {
    std::string o = allocate(m.getResult());
    out << "  moert::siluMul<" << width(m.getResult()) << ">("
        << name(m.getInput()) << ", n * "
        << getFloatsPerToken(m.getResult()) / width(m.getResult()) << ", " << o
        << ");\n";
    return success();
  }
  if (auto c = dyn_cast<ExpertCombineOp>(op)) {
    std::string o = allocate(c.getResult());
    out << "  moert::expertCombine<" << width(c.getResult()) << ", "
        << width(c.getWeights()) << ">(" << name(c.getInput()) << ", "
        << name(c.getPerm()) << ", " << name(c.getWeights()) << ", n, " << o;
    if (Value r = c.getResidual())
      out << ", " << name(r);
    out << ");\n";
    return success();
  }
  return op->emitOpError("is not supported by the CPU target");
}

} // namespace

LogicalResult mlir::moe::emitCpuProgram(ModuleOp module,
                                        const EmitOptions &options,
                                        raw_ostream &os) {
  CpuEmitter emitter(module, options);
  if (failed(emitter.run()))
    return failure();
  os << "// Generated by moe-compile (CPU target) for model '"
     << cppComment(options.modelName) << "'. Do not edit.\n"
     << "#include \"moert/kernels.h\"\n\n"
     << "namespace {\n\n";
  emitter.writeTables(os);
  os << "void forward(const moert_exec *ex, int64_t n, const int32_t *tokens,\n"
     << "             const int32_t *positions, float *logits) {\n"
     << "  moert_pool *pool = ex->pool;\n"
     << "  float *arena = ex->scratch;\n"
     << "  const int64_t n_max = ex->max_tokens;\n";
  // Weight pointers, typed.
  for (auto [i, constSource] : llvm::enumerate(emitter.weights())) {
    WeightSourceOp source = constSource;
    StringRef t =
        cppType(cast<RankedTensorType>(source.getType()).getElementType());
    os << "  const " << t << " *W" << i << " = static_cast<const " << t
       << " *>(ex->weights[" << i << "]);\n";
  }
  os << emitter.forwardBody() << "}\n\n";
  emitter.writeDescriptor(os, "MOERT_TARGET_CPU, nullptr, nullptr, 0, nullptr");
  return success();
}
