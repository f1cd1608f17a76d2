# cmake -DGENERATED=... -DCOMMITTED=... -P CheckDocUpToDate.cmake
# Fails, saying how to fix it, when a committed reference in docs/ differs
# from what ODS generates now.
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${GENERATED} ${COMMITTED}
                RESULT_VARIABLE different)
if(different)
  message(FATAL_ERROR "${COMMITTED} is out of date with the .td files; "
                      "run `ninja -C build update-docs` and commit the result")
endif()
