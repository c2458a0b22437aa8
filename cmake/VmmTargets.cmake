# Helpers shared by every folder's CMakeLists.txt.

# vmm_warnings(<target>): the project's warning set.
function(vmm_warnings target)
  target_compile_options(${target} PRIVATE ${VMM_WARNINGS})
endfunction()

# vmm_add_gtest(<name> LABELS <label>... SOURCES <src>... LIBS <lib>... [TIMEOUT <s>])
# One GoogleTest binary; every TEST in it becomes a ctest test carrying LABELS.
# Discovery happens when ctest runs (PRE_TEST), so building never executes test
# binaries (which matters for sanitizer builds and for /dev/kvm tests).
function(vmm_add_gtest name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LABELS;SOURCES;LIBS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main Threads::Threads)
  vmm_warnings(${name})
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()
