//===- CudaDriverTest.cpp - libmoert's driver table vs cuda.h ---*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// libmoert resolves the CUDA driver with dlsym and declares the signatures
// itself (runtime/src/cuda_api.h), so nothing checks them when it builds.
// Here the same list is expanded against the toolkit's cuda.h: every
// function pointer type must be the type of cuda.h's function (checked at
// compile time), and every symbol libmoert looks up must be the versioned
// name cuda.h maps the API name to (cuMemAlloc -> cuMemAlloc_v2, ...).
//
//===----------------------------------------------------------------------===//

#include <cuda.h>

#include "runtime/src/cuda_api.h"

#include <gtest/gtest.h>

#include <type_traits>

#define MOERT_STR2(x) #x
#define MOERT_STR(x) MOERT_STR2(x)

#define MOERT_CHECK_SIGNATURE(name, symbol, ...)                               \
  static_assert(std::is_same_v<__VA_ARGS__, decltype(&::name)>,                \
                #name ": libmoert's signature differs from cuda.h's");
MOERT_CU_FUNCTIONS(MOERT_CHECK_SIGNATURE)

namespace {

struct Entry {
  const char *resolved;   // what libmoert passes to dlsym
  const char *fromHeader; // what cuda.h's macros make of the API name
};

#define MOERT_ENTRY(name, symbol, ...) {symbol, MOERT_STR(name)},
const Entry kEntries[] = {MOERT_CU_FUNCTIONS(MOERT_ENTRY)};

TEST(CudaDriverTest, ResolvesTheSymbolsCudaHLinksAgainst) {
  EXPECT_EQ(std::size(kEntries), 28u);
  for (const Entry &e : kEntries)
    EXPECT_STREQ(e.resolved, e.fromHeader);
}

} // namespace
