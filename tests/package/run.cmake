# SPDX-License-Identifier: Apache-2.0 OR MIT
#
# The package test (ctest entry package_test), run with cmake -P:
#   1. cmake --install <TMF_BINARY_DIR> --prefix <TMF_BINARY_DIR>/package-prefix (and bin/tmf
#      runs, when the build has the tools)
#   2. configure, build and run tests/package/ against that prefix (CMAKE_PREFIX_PATH)
#   3. the same against the build tree's export (tmf_DIR=<TMF_BINARY_DIR>)
#   4. configure, build and run tests/package/subdirectory/, which adds the tmf sources with
#      add_subdirectory(<TMF_SOURCE_DIR> tmf-build); GoogleTest and Google Benchmark are made
#      unfindable (CMAKE_DISABLE_FIND_PACKAGE_*), so a subproject that built tests would fail
# Each consumer is built with the compiler, flags and generator of the tmf build.
#
# Variables: TMF_SOURCE_DIR, TMF_BINARY_DIR, TMF_PACKAGE_SOURCE_DIR, TMF_CONFIG, TMF_GENERATOR,
# TMF_MAKE_PROGRAM, TMF_CXX_COMPILER, TMF_CXX_FLAGS, TMF_EXE_LINKER_FLAGS, TMF_TEST_DIR.

cmake_minimum_required(VERSION 3.20)

foreach(_var TMF_SOURCE_DIR TMF_BINARY_DIR TMF_PACKAGE_SOURCE_DIR TMF_CXX_COMPILER)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "run.cmake: ${_var} is not set")
  endif()
endforeach()
if(NOT TMF_TEST_DIR)
  set(TMF_TEST_DIR "${TMF_BINARY_DIR}/test-files")
endif()

set(_prefix "${TMF_BINARY_DIR}/package-prefix")
set(_work "${TMF_BINARY_DIR}/package-test")

# run(<step> <command>...): runs a command, echoing it; stops the test if it fails.
function(run step)
  string(REPLACE ";" " " _line "${ARGN}")
  message(STATUS "package_test: ${step}: ${_line}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "package_test: ${step} failed (${_rc})")
  endif()
endfunction()

set(_config_args "")
if(TMF_CONFIG)
  set(_config_args --config "${TMF_CONFIG}")
endif()

file(REMOVE_RECURSE "${_prefix}" "${_work}")
file(MAKE_DIRECTORY "${TMF_TEST_DIR}")
run(install "${CMAKE_COMMAND}" --install "${TMF_BINARY_DIR}" --prefix "${_prefix}" ${_config_args})
# A build with the tools installs the command: bin/tmf, which runs.
if(EXISTS "${TMF_BINARY_DIR}/tools/tmf")
  if(NOT EXISTS "${_prefix}/bin/tmf")
    message(FATAL_ERROR "package_test: the build has tools/tmf but cmake --install put no bin/tmf in ${_prefix}")
  endif()
  run(installed_command "${_prefix}/bin/tmf" --version)
endif()

foreach(_tree install build subdirectory)
  set(_source "${TMF_PACKAGE_SOURCE_DIR}")
  set(_exe_name tmf_package_test)
  if(_tree STREQUAL "install")
    set(_find_args "-DCMAKE_PREFIX_PATH=${_prefix}")
    set(_expected_dir "${_prefix}/")
  elseif(_tree STREQUAL "build")
    set(_find_args "-Dtmf_DIR=${TMF_BINARY_DIR}")
    set(_expected_dir "${TMF_BINARY_DIR}")
  else()
    set(_source "${TMF_PACKAGE_SOURCE_DIR}/subdirectory")
    set(_exe_name tmf_subdirectory_test)
    set(_find_args "-DTMF_SOURCE_DIR=${TMF_SOURCE_DIR}"
        -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON --no-warn-unused-cli)
    set(_expected_dir "")
  endif()
  set(_build "${_work}/${_tree}")

  set(_configure "${CMAKE_COMMAND}" -S "${_source}" -B "${_build}"
      "-DCMAKE_CXX_COMPILER=${TMF_CXX_COMPILER}"
      "-DCMAKE_CXX_FLAGS=${TMF_CXX_FLAGS}"
      "-DCMAKE_EXE_LINKER_FLAGS=${TMF_EXE_LINKER_FLAGS}"
      -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
      ${_find_args})
  if(TMF_GENERATOR)
    list(APPEND _configure -G "${TMF_GENERATOR}")
  endif()
  if(TMF_MAKE_PROGRAM)
    list(APPEND _configure "-DCMAKE_MAKE_PROGRAM=${TMF_MAKE_PROGRAM}")
  endif()
  if(TMF_CONFIG)
    list(APPEND _configure "-DCMAKE_BUILD_TYPE=${TMF_CONFIG}")
  endif()
  run("configure (${_tree} tree)" ${_configure})

  # Make sure the package came from where it should (not from a system-wide tmf).
  if(_expected_dir)
    file(STRINGS "${_build}/CMakeCache.txt" _tmf_dir REGEX "^tmf_DIR:")
    string(REGEX REPLACE "^tmf_DIR:[A-Z]+=" "" _tmf_dir "${_tmf_dir}")
    string(FIND "${_tmf_dir}" "${_expected_dir}" _pos)
    if(NOT _pos EQUAL 0)
      message(FATAL_ERROR "package_test: tmf was found in '${_tmf_dir}', expected under '${_expected_dir}'")
    endif()
  endif()

  run("build (${_tree} tree)" "${CMAKE_COMMAND}" --build "${_build}" ${_config_args})

  # Single-config generators put the executable in the build dir, multi-config ones in <config>/.
  set(_exe "${_build}/${_exe_name}")
  if(NOT EXISTS "${_exe}" AND TMF_CONFIG)
    set(_exe "${_build}/${TMF_CONFIG}/${_exe_name}")
  endif()
  set(_file "${TMF_TEST_DIR}/package_test.${_tree}.tmf")
  file(REMOVE "${_file}" "${_file}-log")
  run("run (${_tree} tree)" "${_exe}" "${_file}")
  file(REMOVE "${_file}" "${_file}-log")
endforeach()

message(STATUS "package_test: passed")
