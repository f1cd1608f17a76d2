#===- cmake/MoEFuzz.cmake - libFuzzer targets and their smoke runs -*- cmake -*-#
#
# The fuzzers are built with Debian's clang-22 (libFuzzer + ASan + UBSan)
# beside the main g++ build, from the sources they exercise (which depend on
# LLVM Support at most). Each has a bounded smoke run in the test suite,
# seeded with a committed corpus; run one longer by hand:
#   build/bin/NAME -max_total_time=600 CORPUS_DIR
#
#===----------------------------------------------------------------------===#

find_program(MOE_FUZZ_CXX NAMES clang++-22 clang++
             HINTS /usr/lib/llvm-22/bin NO_DEFAULT_PATH)
if(NOT MOE_FUZZ_CXX)
  message(WARNING "clang++-22 not found: the fuzzers are not built and their "
                  "smoke tests report as skipped")
endif()

# moe_add_fuzzer(NAME SOURCES src... [DEPENDS file...] [INCLUDES dir...]
#                [LLVM])
# builds bin/NAME; LLVM links the shared libLLVM.
function(moe_add_fuzzer name)
  cmake_parse_arguments(ARG "LLVM" "" "SOURCES;DEPENDS;INCLUDES;LIBS" ${ARGN})
  if(NOT MOE_FUZZ_CXX)
    return()
  endif()
  set(output ${PROJECT_BINARY_DIR}/bin/${name})
  set(flags -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined
            -fno-sanitize-recover=all -I${PROJECT_SOURCE_DIR})
  foreach(dir ${ARG_INCLUDES})
    list(APPEND flags -I${dir})
  endforeach()
  set(libs ${ARG_LIBS})
  if(ARG_LLVM)
    list(APPEND flags ${MOE_LLVM_DEFINITIONS} -isystem ${LLVM_INCLUDE_DIRS})
    set(libs -L${LLVM_LIBRARY_DIR} -lLLVM -Wl,-rpath,${LLVM_LIBRARY_DIR})
  endif()
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${MOE_FUZZ_CXX} ${flags} ${ARG_SOURCES} ${libs} -o ${output}
    DEPENDS ${ARG_SOURCES} ${ARG_DEPENDS}
    COMMENT "Building the fuzzer ${name} with ${MOE_FUZZ_CXX}"
    VERBATIM)
  add_custom_target(${name} ALL DEPENDS ${output})
endfunction()

# moe_add_fuzz_smoke_test(NAME FUZZER CORPUS dir [MAX_LEN n])
# a bounded run (200,000 inputs or 30 s) of bin/FUZZER from CORPUS; new
# inputs go to a scratch corpus in the build tree.
function(moe_add_fuzz_smoke_test name fuzzer corpus)
  cmake_parse_arguments(ARG "" "MAX_LEN" "" ${ARGN})
  if(NOT ARG_MAX_LEN)
    set(ARG_MAX_LEN 4096)
  endif()
  if(NOT MOE_FUZZ_CXX)
    add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} -E echo
             "skipped: clang++-22 is not installed")
    set_tests_properties(${name} PROPERTIES SKIP_REGULAR_EXPRESSION "skipped")
    return()
  endif()
  set(scratch ${CMAKE_CURRENT_BINARY_DIR}/${name}-corpus)
  file(MAKE_DIRECTORY ${scratch})
  add_test(NAME ${name}
    COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
            ${PROJECT_BINARY_DIR}/bin/${fuzzer} -seed=1 -runs=200000
            -max_total_time=30 -max_len=${ARG_MAX_LEN}
            -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/${name}-
            ${scratch} ${corpus})
endfunction()
