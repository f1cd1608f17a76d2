//===- ModelBuilder.h - build moe IR for a ModelSpec ------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The one builder every frontend goes through: given the hyper-parameters,
// the frontend's tensor names and where each tensor lives, it emits
//
//   module attributes {moe.model = #moe.model<...>,
//                      moe.weight_dir = "/abs/dir"} {
//     moe.weight_source "<name>" in "<file>" at <offset> : tensor<...>
//         [transposed | rows <start> step <step> of tensor<...>]
//     ...                                    (the weight manifest)
//     func.func @forward(%tokens: tensor<?xi32>, %positions: tensor<?xi32>,
//                        %cache_0: !moe.kv_cache<...>, ...)
//         -> (tensor<?xVxf32>, !moe.kv_cache<...>, ...)
//   }
//
// `@forward` runs the tokens at the given absolute positions through every
// layer, appending to each layer's cache, and returns the logits after each
// token plus the grown caches.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_MODELBUILDER_H
#define MOE_FRONTENDS_MODELBUILDER_H

#include "frontends/ModelSpec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringMap.h"

namespace mlir::moe {

/// Maps (role, layer, expert) to the frontend's tensor name; layer and expert
/// are -1 where they do not apply.
using WeightNamer =
    llvm::function_ref<std::string(WeightRole, int64_t layer, int64_t expert)>;

/// Builds the module described above. `spec` must pass ModelSpec::validate
/// (an error otherwise). Every name the namer produces must be in `weights`
/// with the shape weightShape() gives; a missing one is an error naming it.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
buildModel(mlir::MLIRContext &context, const ModelSpec &spec, WeightNamer names,
           const llvm::StringMap<WeightSource> &weights,
           llvm::StringRef weightDir);

} // namespace mlir::moe

#endif // MOE_FRONTENDS_MODELBUILDER_H
