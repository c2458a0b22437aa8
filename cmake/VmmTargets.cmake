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
  # The tests' own code is compiled at -Og in every configuration: it is
  # half of each build's compile time, and -Og compiles it in ~40% less time
  # than -O1/-O2 (GoogleTest's macros and fmt's templates are what costs).
  # The code under test keeps its configuration's flags: the libraries, vmm
  # and vmm-stress are built apart (an inline function that a test uses as
  # well may end up as the test's -Og copy: the linker keeps one).
  target_compile_options(${name} PRIVATE -Og)
  # GoogleTest's and spdlog's headers are parsed once per translation unit:
  # batching a binary's tests into a few units parses them a few times.
  if(VMM_UNITY_TESTS)
    set_target_properties(${name} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 6)
  endif()
  list(GET ARG_LABELS 0 first_label)
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES LABELS ${first_label} TIMEOUT ${ARG_TIMEOUT})
  # A list cannot pass through gtest_discover_tests' PROPERTIES (each further
  # label would be read as a property name): several labels are set on the
  # discovered tests by a script that runs after discovery.
  list(LENGTH ARG_LABELS label_count)
  if(label_count GREATER 1)
    set(script ${CMAKE_CURRENT_BINARY_DIR}/${name}_labels.cmake)
    file(WRITE ${script} "if(${name}_TESTS)\n  set_tests_properties(\${${name}_TESTS} PROPERTIES LABELS \"${ARG_LABELS}\")\nendif()\n")
    set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${script})
  endif()
endfunction()
