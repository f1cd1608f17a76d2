//===- moe-opt.cpp - moe optimizer driver -----------------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// mlir-opt for the moe dialect: parses, verifies and transforms moe IR with
// our passes and the generic upstream ones (canonicalize, cse, ...).
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerTransformsPasses();
  mlir::moe::registerMoEPasses();
  mlir::moe::registerPipelines();

  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::arith::ArithDialect,
                  mlir::func::FuncDialect, mlir::tensor::TensorDialect>();
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "moe-compile optimizer driver\n", registry));
}
