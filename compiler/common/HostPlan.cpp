//===- HostPlan.cpp - printing a target's launch plan -----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "compiler/common/HostPlan.h"
#include "compiler/common/Lowering.h"
#include "passes/Passes.h"

#include "dialects/MoE/MoEOps.h"
#include "dialects/MoERT/MoERT.h"
#include "frontends/InputFiles.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AffineExpr.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/Format.h"

#include <cmath>
#include <cstdlib>

using namespace mlir;
using namespace mlir::moe;

std::string mlir::moe::cppQuoted(StringRef s) {
  // Printable ASCII as itself, but for the three characters that end or
  // change a literal ('"', '\\', and '?', which could start a trigraph);
  // every other byte as a three-digit octal escape, which cannot run on into
  // the characters after it (hex escapes can).
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\' || c == '?') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      out += '\\';
      out += char('0' + (c >> 6));
      out += char('0' + ((c >> 3) & 7));
      out += char('0' + (c & 7));
    }
  }
  return out + "\"";
}

std::string mlir::moe::cppComment(StringRef s) {
  // A line comment ends at a newline and continues past a trailing
  // backslash (or the trigraph ??/): keep printable ASCII but for those.
  std::string out;
  for (unsigned char c : s)
    out += c >= 0x20 && c < 0x7f && c != '\\' && c != '?' ? char(c) : '_';
  return out;
}

std::string mlir::moe::cppFloat(double v) {
  // The shortest decimal that reads back to the same float.
  float f = float(v);
  std::string s;
  for (int digits = 6; digits <= 9; ++digits) {
    s.clear();
    llvm::raw_string_ostream(s) << llvm::format("%.*g", digits, double(f));
    if (std::strtof(s.c_str(), nullptr) == f)
      break;
  }
  return s + "f";
}

std::string mlir::moe::cppDouble(double v) {
  std::string s;
  llvm::raw_string_ostream(s) << llvm::format("%.17g", v);
  return s;
}

namespace {

enum class Target { Cpu, Cuda };

StringRef dtypeEnum(Type t) {
  if (auto quant = dyn_cast<QuantType>(t)) {
    switch (quant.getFormat()) {
    case QuantFormat::Q8_0:
      return "MOERT_Q8_0";
    case QuantFormat::Q4_0:
      return "MOERT_Q4_0";
    case QuantFormat::Q4_1:
      return "MOERT_Q4_1";
    case QuantFormat::Q4_K:
      return "MOERT_Q4_K";
    case QuantFormat::Q5_K:
      return "MOERT_Q5_K";
    case QuantFormat::Q6_K:
      return "MOERT_Q6_K";
    }
  }
  if (t.isF16())
    return "MOERT_F16";
  if (t.isBF16())
    return "MOERT_BF16";
  return "MOERT_F32";
}

/// The kernel templates each target's library has: a callee outside these
/// is refused, so the IR names code but never writes it.
const llvm::StringSet<> &knownCallees(Target target) {
  static const llvm::StringSet<> cpu = {
      "moert::embedding",        "moert::rmsNorm",
      "moert::linear",           "moert::fusedLinear",
      "moert::lmHead",           "moert::rope",
      "moert::attention",        "moert::add",
      "moert::router",           "moert::fusedRouter",
      "moert::expertCapacity",   "moert::experts",
      "moert::expertPermute",    "moert::groupedMatmul",
      "moert::siluMul",          "moert::expertCombine",
      "moert::epExchangeCounts", "moert::epDispatch",
      "moert::epExperts",        "moert::epCombine"};
  static const llvm::StringSet<> cuda = {"moert::cuda::embedding",
                                         "moert::cuda::rmsNorm",
                                         "moert::cuda::gemv",
                                         "moert::cuda::gemmMma",
                                         "moert::cuda::gemvMulti",
                                         "moert::cuda::rope",
                                         "moert::cuda::attentionDecode",
                                         "moert::cuda::attentionDecodeFinish",
                                         "moert::cuda::attentionPrefill",
                                         "moert::cuda::kvAppend",
                                         "moert::cuda::add",
                                         "moert::cuda::fusedRouter",
                                         "moert::cuda::expertPermute",
                                         "moert::cuda::siluMul",
                                         "moert::cuda::expertCombine",
                                         "moert::cuda::expertCapacity",
                                         "moert::cuda::epGatherLocal",
                                         "moert::cuda::epScaleRows",
                                         "moert::cuda::epPartialSum",
                                         "moert::cuda::epSumPartials"};
  return target == Target::Cpu ? cpu : cuda;
}

/// A kernel's name as the lowering makes them, `kind_<number>`: a C
/// identifier that is no keyword and no reserved name.
bool isKernelName(StringRef s) {
  StringRef kind = s.rsplit('_').first, number = s.rsplit('_').second;
  return s.size() <= 200 && !kind.empty() && llvm::isLower(kind.front()) &&
         !number.empty() && llvm::all_of(number, llvm::isDigit) &&
         llvm::all_of(kind, [](char c) {
           return llvm::isLower(c) || llvm::isDigit(c) || c == '_';
         });
}

struct Cache {
  int64_t kvHeads = 0, headDim = 0, capacity = 0, window = 0;
  bool seen = false;
};

class PlanPrinter {
public:
  PlanPrinter(ModuleOp module, const EmitOptions &options, Target target)
      : module(module), options(options), target(target) {}

  LogicalResult run();
  void writeTables(raw_ostream &os) const;
  void writeDescriptor(raw_ostream &os, StringRef targetFields) const;
  /// The `__global__` kernels (CUDA).
  LogicalResult writeKernels(raw_ostream &os) const;

  StringRef targetName() const {
    return target == Target::Cpu ? "CPU" : "CUDA";
  }

  ModuleOp module;
  const EmitOptions &options;
  Target target;
  std::string body;
  llvm::raw_string_ostream out{body};
  std::vector<WeightSourceOp> manifest;
  /// The module's moe.raw_weight_files: files with no header (ONNX external
  /// data) and their size when imported.
  llvm::StringMap<uint64_t> rawFiles;
  uint64_t rawFileSize(WeightSourceOp s) const {
    return s.getArtifact() ? 0 : rawFiles.lookup(s.getFile());
  }
  llvm::StringMap<size_t> manifestIndex;
  /// Expert parallelism: the ranks (0: one process) and, per manifest
  /// weight, the rank that holds it (-1: every rank).
  int64_t epRanks = 0;
  std::vector<int32_t> weightRanks;
  /// Whether the plan reads moert.logits_from (moert_program::logits_from).
  bool logitsFrom = false;
  /// moe.expert_capacity's factor (moert_program::capacity_factor; 0: none).
  double capacityFactor = 0;
  LogicalResult recordExpertRanks(moert::CallOp call);
  /// A `moert.first_expert` table's entries: expert-major, equal parts.
  LogicalResult recordTableRanks(moert::TableOp table, ArrayRef<int64_t> first);
  /// Records the rank of each weight of an expert table (expert-major,
  /// `parts` entries an expert) when the experts are split over the ranks as
  /// moe-shard-experts splits them; `op` takes the diagnostics.
  LogicalResult recordRanks(Operation *op, ValueRange entries, int64_t parts,
                            int64_t experts, int64_t ranks);
  /// Records the factor of a call or launch of the capacity kernel, whose
  /// arguments are (weights, indices, factor, ...).
  LogicalResult recordCapacity(Operation *op, ValueRange args);
  std::vector<moert::KernelOp> kernels;
  llvm::StringMap<size_t> kernelIndex;
  std::vector<Cache> caches;
  int64_t maxPositions = 0, vocab = 0, hidden = 0;
  int64_t arenaPerToken = 0, workspaceFloats = 0, cacheBytes = 0;
  StringRef weightDir;
  /// The C++ spelling of a weight element type (`moert::q8_0`, ...).
  FailureOr<std::string> elementName(Operation *op, Type t) const;

private:
  LogicalResult collectArguments(func::FuncOp func);
  LogicalResult printBlock(Block &block, int indent);
  LogicalResult printOp(Operation *op, int indent);
  /// The C++ spelling of a template argument.
  FailureOr<std::string> templateArg(Operation *op, Attribute a) const;
  /// The C++ expression of an operand.
  FailureOr<std::string> expr(Operation *user, Value v) const;
  llvm::DenseMap<Value, std::string> names;
  int64_t nextName = 0;
};

FailureOr<std::string> PlanPrinter::elementName(Operation *op, Type t) const {
  bool cpu = target == Target::Cpu;
  if (t.isF32())
    return std::string("float");
  if (t.isF16())
    return std::string(cpu ? "moert::f16" : "__half");
  if (t.isBF16())
    return std::string(cpu ? "moert::bf16" : "__nv_bfloat16");
  if (isa<NoneType>(t))
    return std::string("void");
  // The block structs of moert/quant.h, which both targets include.
  if (auto quant = dyn_cast<QuantType>(t))
    return "moert::" + stringifyQuantFormat(quant.getFormat()).str();
  return op->emitOpError("the ") << targetName() << " target has no " << t;
}

FailureOr<std::string> PlanPrinter::templateArg(Operation *op,
                                                Attribute a) const {
  if (auto b = dyn_cast<BoolAttr>(a))
    return std::string(b.getValue() ? "true" : "false");
  if (auto i = dyn_cast<IntegerAttr>(a))
    return std::to_string(i.getInt());
  if (auto t = dyn_cast<TypeAttr>(a))
    return elementName(op, t.getValue());
  return op->emitOpError("cannot print the template argument ") << a;
}

FailureOr<std::string> PlanPrinter::expr(Operation *user, Value v) const {
  if (auto c = v.getDefiningOp<arith::ConstantOp>()) {
    if (auto f = dyn_cast<FloatAttr>(c.getValue())) {
      if (!std::isfinite(f.getValueAsDouble()) ||
          !(f.getType().isF32() || f.getType().isF64()))
        return c.emitOpError("the printers take finite f32 and f64 "
                             "constants only");
      return f.getType().isF32() ? cppFloat(f.getValueAsDouble())
                                 : cppDouble(f.getValueAsDouble());
    }
    if (auto i = dyn_cast<IntegerAttr>(c.getValue())) {
      if (!i.getType().isSignlessInteger(64) &&
          !i.getType().isSignlessInteger(32))
        return c.emitOpError("the printers take i32 and i64 constants only");
      return std::to_string(i.getInt());
    }
  }
  auto it = names.find(v);
  if (it == names.end())
    return user->emitOpError("uses a value the ")
           << targetName() << " printer cannot name: " << v.getType();
  return it->second;
}

LogicalResult PlanPrinter::collectArguments(func::FuncOp func) {
  using moert::MoERTDialect;
  auto bad = [&](const Twine &why) {
    return func.emitOpError("is not a lowered @forward: ") << why;
  };
  if (func.getNumResults())
    return bad("it returns values (the lowering writes the logits to an "
               "argument)");
  for (BlockArgument arg : func.getArguments()) {
    unsigned i = arg.getArgNumber();
    if (auto role =
            func.getArgAttrOfType<StringAttr>(i, MoERTDialect::kArgAttrName)) {
      auto memref = dyn_cast<MemRefType>(arg.getType());
      if (!memref || !moert::isBatchBuffer(memref))
        return bad("argument " + Twine(i) + " is not a buffer");
      if (names.count(arg))
        return bad("argument " + Twine(i) + " has two roles");
      for (Value other : func.getArguments())
        if (other != arg && names.lookup(other) == role.getValue())
          return bad("two arguments are the " + role.getValue());
      names[arg] = role.getValue().str();
      continue;
    }
    auto layer =
        func.getArgAttrOfType<IntegerAttr>(i, MoERTDialect::kKvLayerAttrName);
    auto type = dyn_cast<KVCacheType>(arg.getType());
    if (!layer || !type)
      return bad("argument " + Twine(i) + " has no moert.arg or " +
                 "moert.kv_layer");
    int64_t l = layer.getInt();
    if (l >= int64_t(func.getNumArguments()) || !type.hasStaticCapacity() ||
        !type.getElementType().isF32())
      return bad("argument " + Twine(i) +
                 " is not an f32 cache of planned capacity of a layer");
    if (caches.size() <= size_t(l))
      caches.resize(l + 1);
    Cache &c = caches[l];
    if (c.seen)
      return bad("two caches of layer " + Twine(l));
    auto window = func.getArgAttrOfType<IntegerAttr>(
        i, moert::MoERTDialect::kKvWindowAttrName);
    c = Cache{type.getNumKvHeads(), type.getHeadDim(), type.getCapacity(),
              window ? window.getInt() : 0, true};
    if (c.window < 0 ||
        (c.window ? c.capacity < std::min(c.window, maxPositions)
                  : c.capacity < maxPositions))
      return bad(
          "the cache of layer " + Twine(l) + " cannot hold " +
          Twine(c.window ? std::min(c.window, maxPositions) : maxPositions) +
          " positions");
    names[arg] = "ex->caches[" + std::to_string(l) + "]";
  }
  for (StringRef role : {"tokens", "positions", "logits"})
    if (llvm::none_of(func.getArguments(),
                      [&](Value a) { return names.lookup(a) == role; }))
      return bad(("no argument is the " + role).str());
  for (auto [l, c] : llvm::enumerate(caches))
    if (!c.seen)
      return bad("no cache of layer " + Twine(l));
  if (caches.empty())
    return bad("it has no KV caches");
  // The logits: [?, vocab] f32.
  for (Value a : func.getArguments())
    if (names.lookup(a) == "logits") {
      auto t = cast<MemRefType>(a.getType());
      if (t.getRank() != 2 || t.getDimSize(1) != vocab ||
          !t.getElementType().isF32())
        return bad("the logits are not memref<?x" + Twine(vocab) + "xf32>");
    }
  return success();
}

LogicalResult PlanPrinter::printBlock(Block &block, int indent) {
  for (Operation &op : block)
    if (failed(printOp(&op, indent)))
      return failure();
  return success();
}

LogicalResult PlanPrinter::printOp(Operation *op, int indent) {
  std::string pad(indent, ' ');
  bool cpu = target == Target::Cpu;
  auto declare = [&](Value v, StringRef prefix) {
    std::string name = (prefix + Twine(nextName++)).str();
    names[v] = name;
    return name;
  };
  if (auto v = dyn_cast<moert::ViewOp>(op)) {
    int64_t offset = v.getOffset(), size = v.getSize();
    if (offset > kMaxArenaFloatsPerToken || size > kMaxArenaFloatsPerToken)
      return op->emitOpError("the activation arena would need more than ")
             << kMaxArenaFloatsPerToken << " floats per token";
    arenaPerToken = std::max(arenaPerToken, offset + size);
    auto type = cast<MemRefType>(v.getType());
    bool ints = type.getElementType().isInteger(32);
    std::string name = declare(v, "b");
    out << pad << (ints ? "int32_t" : "float") << " *" << name << " = ";
    if (ints)
      out << "reinterpret_cast<int32_t *>(";
    out << "arena + n_max * " << offset << (ints ? ")" : "") << ";\n";
    return success();
  }
  if (auto w = dyn_cast<moert::WorkspaceOp>(op)) {
    if (cpu)
      return op->emitOpError("the CPU target has no workspace");
    if (int64_t(w.getSize()) > kMaxArenaFloatsPerToken)
      return op->emitOpError("a workspace of at most ")
             << kMaxArenaFloatsPerToken << " floats";
    workspaceFloats = std::max<int64_t>(workspaceFloats, w.getSize());
    names[w] = "workspace";
    return success();
  }
  if (auto w = dyn_cast<moert::WeightOp>(op)) {
    auto it = manifestIndex.find(w.getName());
    if (it == manifestIndex.end())
      return op->emitOpError("the ")
             << targetName() << " target needs a moe.weight_source for '"
             << w.getName() << "' (import the model with moe-translate)";
    auto source = cast<RankedTensorType>(manifest[it->second].getType());
    auto type = cast<MemRefType>(w.getType());
    if (source.getShape() != type.getShape() ||
        source.getElementType() != type.getElementType())
      return op->emitOpError("has type ")
             << type << ", but its source is " << source;
    names[w] = "W" + std::to_string(it->second);
    return success();
  }
  if (auto n = dyn_cast<moert::NullOp>(op)) {
    names[n] = cpu ? "nullptr" : "null";
    return success();
  }
  if (auto c = dyn_cast<moert::CachePlaneOp>(op)) {
    FailureOr<std::string> cache = expr(op, c.getCache());
    if (failed(cache) || !isa<KVCacheType>(c.getCache().getType()))
      return op->emitOpError("reads a cache argument of @forward");
    names[c] = *cache + (c.getValues() ? ".v" : ".k");
    return success();
  }
  if (auto t = dyn_cast<moert::TokensOp>(op)) {
    names[t] = t.getTimes() == 1 ? std::string("n")
                                 : "n * " + std::to_string(t.getTimes());
    return success();
  }
  if (auto f = dyn_cast<moert::LogitsFromOp>(op)) {
    if (!cpu)
      return op->emitOpError("is a CPU value in a CUDA launch plan");
    names[f] = "ex->logits_from";
    logitsFrom = true;
    return success();
  }
  if (auto r = dyn_cast<moert::EpRankOp>(op)) {
    names[r] = "ex->comm->rank()";
    return success();
  }
  if (auto r = dyn_cast<moert::RouteStatsOp>(op)) {
    names[r] = "ex->route_stats";
    return success();
  }
  if (auto c = dyn_cast<arith::ConstantOp>(op)) {
    if (!isa<FloatAttr, IntegerAttr>(c.getValue()))
      return op->emitOpError("the printer takes scalar constants only");
    return success();
  }
  if (auto t = dyn_cast<moert::TableOp>(op)) {
    moert::TableType type = t.getType();
    // The CUDA target's expert-parallel tables say which expert (so which
    // rank) each entry is, expert-major.
    if (auto first = t->getAttrOfType<DenseI64ArrayAttr>("moert.first_expert"))
      if (failed(recordTableRanks(t, first.asArrayRef())))
        return failure();
    SmallVector<std::string> entries;
    for (Value e : t.getEntries()) {
      if (e.getDefiningOp<moert::NullOp>()) {
        entries.push_back("nullptr");
        continue;
      }
      FailureOr<std::string> s = expr(op, e);
      if (failed(s))
        return failure();
      entries.push_back(*s);
    }
    FailureOr<std::string> element = elementName(op, type.getElementType());
    if (failed(element))
      return failure();
    std::string name = declare(t, "t");
    if (cpu)
      out << pad << (type.getOutput() ? "" : "const ") << *element << " *const "
          << name << "[] = {" << llvm::join(entries, ", ") << "};\n";
    else
      out << pad << "const struct { "
          << (type.getOutput() ? "float" : "const void") << " *p["
          << type.getSize() << "]; } " << name << " = {{"
          << llvm::join(entries, ", ") << "}};\n";
    return success();
  }
  if (auto c = dyn_cast<moert::CallOp>(op);
      c && !cpu && c.getCallee() == "moert::cuda::epAllgather") {
    // The host side of the CUDA target's expert parallelism (ep_host.h).
    ArrayAttr targs = c.getTemplateArgs();
    auto hidden = targs.size() == 2 ? dyn_cast<IntegerAttr>(targs[0]) : nullptr;
    auto ranks = targs.size() == 2 ? dyn_cast<IntegerAttr>(targs[1]) : nullptr;
    if (!c.getCollective() || !hidden || !ranks || c.getArgs().size() != 2)
      return op->emitOpError("moert::cuda::epAllgather takes [H, R] "
                             "(integers) and (partials, n), collective");
    SmallVector<std::string> list = {"ex"};
    for (Value a : c.getArgs()) {
      FailureOr<std::string> s = expr(op, a);
      if (failed(s))
        return failure();
      list.push_back(*s);
    }
    out << pad << "moert::cuda::epAllgather<" << hidden.getInt() << ", "
        << ranks.getInt() << ">(" << llvm::join(list, ", ") << ");\n";
    return success();
  }
  if (auto c = dyn_cast<moert::CallOp>(op)) {
    if (!cpu)
      return op->emitOpError("is a CPU call in a CUDA launch plan");
    if (!knownCallees(target).contains(c.getCallee()))
      return op->emitOpError("calls '")
             << c.getCallee() << "', which is not a kernel of the CPU library";
    SmallVector<std::string> targs, args;
    for (Attribute a : c.getTemplateArgs()) {
      FailureOr<std::string> s = templateArg(op, a);
      if (failed(s))
        return failure();
      targs.push_back(*s);
    }
    if (c.getThreaded())
      args.push_back("pool");
    if (c.getCollective())
      args.push_back("ex->comm");
    if (c.getCallee() == "moert::epExperts" && failed(recordExpertRanks(c)))
      return failure();
    if (c.getCallee() == "moert::expertCapacity" &&
        failed(recordCapacity(op, c.getArgs())))
      return failure();
    for (Value a : c.getArgs()) {
      FailureOr<std::string> s = expr(op, a);
      if (failed(s))
        return failure();
      args.push_back(*s);
    }
    out << pad << c.getCallee() << "<" << llvm::join(targs, ", ") << ">("
        << llvm::join(args, ", ") << ");\n";
    return success();
  }
  if (auto l = dyn_cast<moert::LaunchOp>(op)) {
    if (cpu)
      return op->emitOpError("is a CUDA launch in a CPU launch plan");
    auto it = kernelIndex.find(l.getKernel());
    if (it == kernelIndex.end())
      return op->emitOpError("launches an undeclared kernel");
    moert::KernelOp kernel = kernels[it->second];
    if (kernel.getCallee() == "moert::cuda::expertCapacity" &&
        failed(recordCapacity(op, l.getArgs())))
      return failure();
    // Each argument by address: values that are not lvalues become locals.
    std::string locals, list;
    for (auto [i, a] : llvm::enumerate(l.getArgs())) {
      FailureOr<std::string> s = expr(op, a);
      if (failed(s))
        return failure();
      std::string arg = *s;
      bool lvalue = names.count(a) && !a.getDefiningOp<moert::TokensOp>() &&
                    !a.getDefiningOp<moert::EpRankOp>();
      if (!lvalue) {
        Type t = a.getType();
        StringRef ctype = t.isF32()         ? "float"
                          : t.isF64()       ? "double"
                          : t.isInteger(32) ? "int"
                                            : "int64_t";
        std::string local = "c" + std::to_string(i);
        locals +=
            pad + "  const " + ctype.str() + " " + local + " = " + arg + ";\n";
        arg = local;
      }
      list += (i ? ", " : "") + ("(void *)&" + arg);
    }
    auto dim = [&](Attribute a) -> std::string {
      AffineMap map = cast<AffineMapAttr>(a).getValue();
      std::function<std::string(AffineExpr)> print =
          [&](AffineExpr e) -> std::string {
        if (auto c = dyn_cast<AffineConstantExpr>(e))
          return std::to_string(c.getValue());
        // The token count as int64_t: n times a width may pass INT_MAX.
        if (isa<AffineDimExpr>(e))
          return "n64";
        auto b = cast<AffineBinaryOpExpr>(e);
        std::string lhs = print(b.getLHS()), rhs = print(b.getRHS());
        switch (e.getKind()) {
        case AffineExprKind::Add:
          return "(" + lhs + " + " + rhs + ")";
        case AffineExprKind::Mul:
          return lhs + " * " + rhs;
        case AffineExprKind::CeilDiv:
          return "cdiv(" + lhs + ", " + rhs + ")";
        case AffineExprKind::FloorDiv:
          return "(" + lhs + " / " + rhs + ")";
        default:
          return "(" + lhs + " % " + rhs + ")";
        }
      };
      std::string s = print(map.getResult(0));
      for (AffineExpr r : map.getResults().drop_front())
        s = "cmin(" + s + ", " + print(r) + ")";
      return s;
    };
    if (list.empty())
      list = "nullptr";
    out << pad << "{\n"
        << locals << pad << "  void *args[] = {" << list << "};\n"
        << pad << "  ex->launch(ex->device, " << it->second << ", "
        << dim(l.getGrid()[0]) << ", " << dim(l.getGrid()[1]) << ", "
        << kernel.getThreads() << ", args); // " << kernel.getSymName() << "\n"
        << pad << "}\n";
    return success();
  }
  if (auto d = dyn_cast<moert::IfDecodeOp>(op)) {
    if (cpu)
      return op->emitOpError("the CPU target runs one variant of each "
                             "kernel");
    out << pad << "if (n <= " << d.getMaxTokens() << ") {\n";
    if (!d.getDecode().empty() &&
        failed(printBlock(d.getDecode().front(), indent + 2)))
      return failure();
    out << pad << "} else {\n";
    if (!d.getPrefill().empty() &&
        failed(printBlock(d.getPrefill().front(), indent + 2)))
      return failure();
    out << pad << "}\n";
    return success();
  }
  if (isa<func::ReturnOp>(op))
    return success();
  return op->emitOpError("is not part of a ")
         << targetName() << " launch plan (run --moe-lower-to-"
         << (cpu ? "cpu" : "cuda") << ")";
}

LogicalResult PlanPrinter::run() {
  auto dir = module->getAttrOfType<StringAttr>("moe.weight_dir");
  ModelAttr model = getModel(module);
  if (!dir || !model)
    return module.emitError("the ")
           << targetName()
           << " target needs a model imported by moe-translate "
              "(moe.weight_dir and moe.model)";
  Attribute lowered = module->getAttr("moert.target");
  bool cpu = target == Target::Cpu;
  if (!lowered || (cpu ? !isa<moert::CpuTargetAttr>(lowered)
                       : !isa<moert::CudaTargetAttr>(lowered)))
    return module.emitError("the module is not lowered for the ")
           << targetName() << " target: run --moe-lower-to-"
           << (cpu ? "cpu" : "cuda") << " first";
  weightDir = dir.getValue();
  // The verifier has bounded every field of #moe.model to [1, ...].
  vocab = model.getVocabSize();
  hidden = model.getHiddenSize();
  auto func = module.lookupSymbol<func::FuncOp>("forward");
  if (!func || func.isExternal() || !func.getBody().hasOneBlock())
    return module.emitError("no func.func @forward to print");
  auto positions = func->getAttrOfType<IntegerAttr>("moert.max_positions");
  if (!positions || !positions.getType().isSignlessInteger(64) ||
      positions.getInt() < 1 || positions.getInt() > 2147483647)
    return func.emitOpError("needs moert.max_positions in [1, 2^31 - 1]");
  maxPositions = positions.getInt();
  if (Attribute raw = module->getAttr("moe.raw_weight_files")) {
    auto files = dyn_cast<DictionaryAttr>(raw);
    if (!files)
      return module.emitError("moe.raw_weight_files must be a dictionary");
    for (NamedAttribute file : files) {
      auto size = dyn_cast<IntegerAttr>(file.getValue());
      if (!size || !size.getType().isSignlessInteger(64) || size.getInt() < 1)
        return module.emitError("moe.raw_weight_files: the size of '")
               << file.getName().getValue() << "' must be a positive i64";
      rawFiles[file.getName().getValue()] = uint64_t(size.getInt());
    }
  }
  for (auto source : module.getOps<WeightSourceOp>()) {
    // The manifest names bytes that exist: a quantisation still pending is
    // moe-compile's to carry out (it writes the weights file first).
    if (source.getQuantized())
      return source.emitOpError("weight '")
             << source.getName() << "' is still to be quantised; moe-compile "
             << "writes the quantised weights file and then prints the plan";
    if (source.hasLayout())
      return source.emitOpError("weight '")
             << source.getName() << "' is still to be re-laid out; "
             << "moe-compile writes it into the artifact's weights file and "
             << "then prints the plan";
    manifestIndex[source.getName()] = manifest.size();
    manifest.push_back(source);
  }
  for (auto kernel : module.getOps<moert::KernelOp>()) {
    if (cpu)
      return kernel.emitOpError("the CPU target has no device kernels");
    if (!isKernelName(kernel.getSymName()))
      return kernel.emitOpError("a kernel's name is kind_<number>, in "
                                "lowercase letters, digits and '_'");
    if (!knownCallees(target).contains(kernel.getCallee()))
      return kernel.emitOpError("calls '")
             << kernel.getCallee()
             << "', which is not a kernel of the CUDA library";
    kernelIndex[kernel.getSymName()] = kernels.size();
    kernels.push_back(kernel);
  }
  if (failed(collectArguments(func)) ||
      failed(printBlock(func.getBody().front(), 2)))
    return failure();
  if (arenaPerToken > kMaxArenaFloatsPerToken)
    return func.emitOpError("the activation arena would need more than ")
           << kMaxArenaFloatsPerToken << " floats per token";
  // The KV caches, in bytes, as the descriptor reports them: each is at
  // most 2^58 bytes (kv_cache bounds), but their number is the IR's.
  for (const Cache &c : caches) {
    std::optional<int64_t> bytes =
        llvm::checkedMul<int64_t>(8 * c.kvHeads * c.headDim, c.capacity);
    if (bytes)
      bytes = llvm::checkedAdd(cacheBytes, *bytes);
    if (!bytes)
      return func.emitOpError("the KV caches would need more than 2^63 bytes");
    cacheBytes = *bytes;
  }
  return success();
}

LogicalResult PlanPrinter::recordCapacity(Operation *op, ValueRange args) {
  auto factor = args.size() > 2 ? args[2].getDefiningOp<arith::ConstantOp>()
                                : arith::ConstantOp();
  auto value = factor ? dyn_cast<FloatAttr>(factor.getValue()) : FloatAttr();
  if (!value || !(value.getValueAsDouble() > 0) ||
      (capacityFactor != 0 && capacityFactor != value.getValueAsDouble()))
    return op->emitOpError("the capacity kernel takes one constant factor "
                           "above 0 in a program");
  capacityFactor = value.getValueAsDouble();
  return success();
}

/// moert::epExperts<WG, WU, WD, H, I, E, R>(rows, experts, gates, counts,
/// gate, up, down, out): the gate, up and down tables of E weights each.
LogicalResult PlanPrinter::recordExpertRanks(moert::CallOp call) {
  ArrayAttr targs = call.getTemplateArgs();
  auto experts = targs.size() == 7 ? dyn_cast<IntegerAttr>(targs[5]) : nullptr;
  auto ranks = targs.size() == 7 ? dyn_cast<IntegerAttr>(targs[6]) : nullptr;
  if (!experts || !ranks || call.getArgs().size() != 8)
    return call.emitOpError("moert::epExperts takes 7 template arguments (E "
                            "and R integers) and 8 operands");
  for (unsigned t = 4; t < 7; ++t) {
    auto table = call.getArgs()[t].getDefiningOp<moert::TableOp>();
    if (!table)
      return call.emitOpError("moert::epExperts takes tables of weights");
    if (failed(recordRanks(call, table.getEntries(), 1, experts.getInt(),
                           ranks.getInt())))
      return failure();
  }
  return success();
}

LogicalResult PlanPrinter::recordTableRanks(moert::TableOp table,
                                            ArrayRef<int64_t> first) {
  int64_t ranks = int64_t(first.size()) - 1,
          experts = ranks > 0 ? first.back() : 0;
  int64_t entries = int64_t(table.getEntries().size());
  if (ranks < 1 || ranks > experts || entries % experts ||
      llvm::ArrayRef(splitExperts(experts, ranks)) != first)
    return table.emitOpError("a table of experts split as moe-shard-experts "
                             "splits them, over the program's ranks");
  return recordRanks(table, table.getEntries(), entries / experts, experts,
                     ranks);
}

LogicalResult PlanPrinter::recordRanks(Operation *op, ValueRange entries,
                                       int64_t parts, int64_t experts,
                                       int64_t ranks) {
  if (ranks < 1 || ranks > experts || (epRanks && epRanks != ranks))
    return op->emitOpError("expert parallelism over ")
           << ranks << " ranks for " << experts
           << " experts (the program's other layers: " << epRanks << ")";
  if (int64_t(entries.size()) != experts * parts)
    return op->emitOpError("an expert table of ")
           << experts << " experts takes " << experts * parts
           << " weights, not " << entries.size();
  epRanks = ranks;
  weightRanks.resize(manifest.size(), -1);
  SmallVector<int64_t> first = splitExperts(experts, ranks);
  int64_t rank = 0;
  for (auto [i, entry] : llvm::enumerate(entries)) {
    auto w = entry.getDefiningOp<moert::WeightOp>();
    if (!w)
      return op->emitOpError("an expert table takes weights");
    while (first[rank + 1] <= int64_t(i) / parts)
      ++rank;
    weightRanks[manifestIndex.lookup(w.getName())] = int32_t(rank);
  }
  return success();
}

void PlanPrinter::writeTables(raw_ostream &os) const {
  os << "const moert_weight_desc kWeights[] = {\n";
  for (WeightSourceOp s : manifest) {
    auto t = cast<RankedTensorType>(s.getType());
    os << "  {" << cppQuoted(s.getName()) << ", " << cppQuoted(s.getFile())
       << ", " << s.getOffset() << "ull, " << s.getSizeInBytes() << "ull, "
       << dtypeEnum(t.getElementType()) << ", " << t.getDimSize(0) << ", "
       << (t.getRank() > 1 ? t.getDimSize(1) : 1) << ", " << t.getRank() << ", "
       << (s.getArtifact() ? 1 : 0) << ", " << rawFileSize(s) << "ull},\n";
  }
  os << "};\n\n";
  if (epRanks) {
    os << "const int32_t kWeightRanks[] = {";
    for (auto [i, r] : llvm::enumerate(weightRanks))
      os << (i ? ", " : "") << r;
    os << "};\n\n";
  }
  os << "const moert_cache_desc kCaches[] = {\n";
  for (const Cache &c : caches)
    os << "  {" << c.kvHeads << ", " << c.headDim << ", " << c.capacity << ", "
       << c.window << "},\n";
  os << "};\n\n"
     << "int64_t scratchFloats(int64_t n_max) { return n_max * "
     << arenaPerToken;
  if (workspaceFloats)
    os << " + " << workspaceFloats;
  os << "; }\n\n";
}

void PlanPrinter::writeDescriptor(raw_ostream &os,
                                  StringRef targetFields) const {
  int64_t layers = int64_t(caches.size());
  std::string plan;
  llvm::raw_string_ostream p(plan);
  p << "model: " << options.modelName << " (" << layers << " layers, hidden "
    << hidden << ", vocab " << vocab << "), " << targetName() << " target\n"
    << "weights: " << manifest.size() << " tensors in "
    << printableText(weightDir) << "\n"
    << "activation arena: " << arenaPerToken
    << " floats per token of the batch";
  if (workspaceFloats)
    p << " + " << workspaceFloats << " floats of workspace";
  p << "\n"
    << "kv cache: " << cacheBytes << " bytes for " << maxPositions
    << " positions\n";
  for (auto [l, c] : llvm::enumerate(caches))
    p << "  layer " << l << ": " << c.kvHeads << " kv heads x " << c.capacity
      << " slots x " << c.headDim
      << (c.window ? " (rolling, window " + std::to_string(c.window) + ")"
                   : std::string(" (full)"))
      << "\n";
  if (capacityFactor > 0)
    p << "expert capacity: factor " << llvm::format("%.10g", capacityFactor)
      << " (each expert takes at most ceil("
      << llvm::format("%.10g", capacityFactor)
      << " * tokens * k / experts) routed pairs a forward call; the rest are "
         "dropped)\n";
  if (!options.tokenizer.empty()) {
    p << "tokenizer: " << printableText(options.tokenizerSource) << " ("
      << options.tokenizer.size() << " bytes embedded)\n";
    // The blob as a string literal in lines of 64 bytes (an unsigned char
    // array may be initialised from one; +1 for its NUL): far quicker to
    // compile than a list of numbers.
    os << "const unsigned char kTokenizer[" << options.tokenizer.size() + 1
       << "] =\n";
    StringRef blob = options.tokenizer;
    for (size_t i = 0; i < blob.size(); i += 64)
      os << "    " << cppQuoted(blob.substr(i, 64)) << "\n";
    os << "    ;\n\n";
  }
  os << "} // namespace\n\n"
     << "extern \"C\" const moert_program moert_compiled_program = {\n"
     << "  MOERT_ABI_VERSION, " << cppQuoted(options.modelName) << ", "
     << cppQuoted(weightDir) << ",\n"
     << "  " << vocab << ", " << hidden << ", " << layers << ", "
     << maxPositions << ",\n"
     << "  " << manifest.size() << ", kWeights, kCaches, scratchFloats, "
     << "forward,\n"
     << "  " << cppQuoted(plan) << ",\n"
     << "  " << targetFields << ",\n"
     << "  "
     << (options.artifactDir.empty() ? std::string("nullptr")
                                     : cppQuoted(options.artifactDir))
     << ", "
     << (options.artifactBuild.empty() ? std::string("nullptr")
                                       : cppQuoted(options.artifactBuild))
     << ",\n  "
     << (options.tokenizer.empty()
             ? std::string("nullptr, 0")
             : "kTokenizer, " + std::to_string(options.tokenizer.size()))
     << ",\n  " << epRanks << ", " << (epRanks ? "kWeightRanks" : "nullptr")
     << ", " << (logitsFrom ? 1 : 0) << ", " << cppDouble(capacityFactor)
     << "};\n";
}

LogicalResult PlanPrinter::writeKernels(raw_ostream &os) const {
  for (moert::KernelOp k : kernels) {
    SmallVector<std::string> targs, params, names;
    for (Attribute a : k.getTemplateArgs()) {
      FailureOr<std::string> s = templateArg(k, a);
      if (failed(s))
        return failure();
      targs.push_back(*s);
    }
    for (auto [i, t] : llvm::enumerate(k.getFunctionType().getInputs())) {
      std::string name = "p" + std::to_string(i), type;
      if (auto memref = dyn_cast<MemRefType>(t)) {
        Type element = memref.getElementType();
        FailureOr<std::string> e =
            element.isInteger(32)
                ? FailureOr<std::string>(std::string("int32_t"))
            : element.isInteger(64)
                ? FailureOr<std::string>(std::string("int64_t"))
                : elementName(k, element);
        if (failed(e))
          return failure();
        type = moert::isBatchBuffer(memref) ? *e + " *" : "const " + *e + " *";
      } else if (auto table = dyn_cast<moert::TableType>(t)) {
        type = "const __grid_constant__ moert::cuda::" +
               std::string(table.getOutput() ? "Outs<" : "Ptrs<") +
               std::to_string(table.getSize()) + "> ";
      } else if (t.isF32()) {
        type = "float ";
      } else if (t.isF64()) {
        type = "double ";
      } else if (t.isInteger(32)) {
        type = "int ";
      } else {
        return k.emitOpError("a kernel parameter of ") << t;
      }
      params.push_back(type + name);
      names.push_back(name);
    }
    os << "__global__ void __launch_bounds__(" << k.getThreads() << ") "
       << k.getSymName() << "(" << llvm::join(params, ", ") << ") {\n  "
       << k.getCallee() << "<" << llvm::join(targs, ", ") << ">("
       << llvm::join(names, ", ") << ");\n}\n\n";
  }
  return success();
}

} // namespace

LogicalResult mlir::moe::printCpuProgram(ModuleOp module,
                                         const EmitOptions &options,
                                         raw_ostream &os) {
  PlanPrinter printer(module, options, Target::Cpu);
  if (failed(printer.run()))
    return failure();
  os << "// Generated by moe-compile (CPU target) for model '"
     << cppComment(options.modelName) << "'. Do not edit.\n"
     << "#include \"moert/kernels.h\"\n\n"
     << "namespace {\n\n";
  printer.writeTables(os);
  os << "void forward(const moert_exec *ex, int64_t n, const int32_t *tokens,\n"
     << "             const int32_t *positions, float *logits) {\n"
     << "  moert_pool *pool = ex->pool;\n"
     << "  float *arena = ex->scratch;\n"
     << "  const int64_t n_max = ex->max_tokens;\n";
  // Weight pointers, typed.
  for (auto [i, source] : llvm::enumerate(printer.manifest)) {
    Type element = cast<RankedTensorType>(source.getType()).getElementType();
    FailureOr<std::string> t = printer.elementName(source, element);
    if (failed(t))
      return failure();
    os << "  const " << *t << " *W" << i << " = static_cast<const " << *t
       << " *>(ex->weights[" << i << "]);\n";
  }
  os << printer.body << "}\n\n";
  printer.writeDescriptor(os, "MOERT_TARGET_CPU, nullptr, nullptr, 0, nullptr");
  return success();
}

FailureOr<CudaProgram> mlir::moe::printCudaProgram(ModuleOp module,
                                                   const EmitOptions &options) {
  PlanPrinter printer(module, options, Target::Cuda);
  if (failed(printer.run()))
    return failure();
  CudaProgram program;
  for (moert::KernelOp k : printer.kernels)
    program.kernelNames.push_back(k.getSymName().str());

  llvm::raw_string_ostream dev(program.deviceCode);
  dev << "// Generated by moe-compile (CUDA target) for model '"
      << cppComment(options.modelName) << "'. Do not edit.\n"
      << "// " << program.kernelNames.size()
      << " kernels, specialised to the model's shapes.\n"
      << "#include \"moert/cuda/kernels.cuh\"\n\n"
      << "extern \"C\" {\n\n";
  if (failed(printer.writeKernels(dev)))
    return failure();
  dev << "} // extern \"C\"\n\n"
      << "#ifdef MOERT_CUDA_EMULATOR\n"
      << "// The kernel table of the CPU emulator the tests run this file on\n"
      << "// (test/cuda-emu), in place of the fatbin.\n"
      << "static const moert_emu::Kernel kEmulatorKernels[] = {\n";
  for (const std::string &k : program.kernelNames)
    dev << "  moert_emu::Entry<" << k << ">::kernel(" << cppQuoted(k) << "),\n";
  dev << "};\nMOERT_EMU_IMAGE(kEmulatorKernels)\n#endif\n";

  llvm::raw_string_ostream os(program.hostPlan);
  os << "// Generated by moe-compile (CUDA target) for model '"
     << cppComment(options.modelName) << "'. Do not edit.\n"
     << "#include \"moert/program.h\"\n"
     << "#include \"moert/cuda/ep_host.h\"\n\n"
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
  printer.writeTables(os);
  os << "const char *const kKernels[] = {\n";
  for (const std::string &k : program.kernelNames)
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
  if (printer.workspaceFloats)
    os << "  float *const workspace = arena + n_max * " << printer.arenaPerToken
       << ";\n";
  for (auto [i, source] : llvm::enumerate(printer.manifest))
    os << "  const void *W" << i << " = ex->weights[" << i << "]; // "
       << cppComment(WeightSourceOp(source).getName()) << "\n";
  os << printer.body << "}\n\n";
  printer.writeDescriptor(
      os, "MOERT_TARGET_CUDA, moert_device_image, moert_device_image_end, " +
              std::to_string(program.kernelNames.size()) + ", kKernels");
  return program;
}
