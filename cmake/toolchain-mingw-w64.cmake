# SPDX-License-Identifier: Apache-2.0 OR MIT
#
# Cross-builds tmf's tests, examples and tools for 64-bit Windows with Debian's mingw-w64
# (posix threads) and runs them under Wine: CMAKE_CROSSCOMPILING_EMULATOR makes
# gtest_discover_tests and ctest start every test binary through `wine`.
#
#   cmake -S . -B build/windows -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-mingw-w64.cmake \
#         -DTMF_GTEST_FROM_SOURCE=ON
#
# Packages (scripts/deps.sh, TMF_DEPS_WINDOWS): g++-mingw-w64-x86-64 mingw-w64-x86-64-dev wine wine64.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_CXX_COMPILER x86_64-w64-mingw32-g++-posix)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)
set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR wine)
# Static libstdc++, libgcc and winpthread: the programs run under Wine without a DLL path.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")

# Boost is header-only here (Boost.Intrusive): Debian's /usr/include/boost, seen through a
# directory that holds nothing else (all of /usr/include would shadow mingw's C headers).
set(_tmf_boost_dir "${CMAKE_BINARY_DIR}/_boost_include")
if(NOT EXISTS "${_tmf_boost_dir}/boost" AND EXISTS /usr/include/boost)
  file(MAKE_DIRECTORY "${_tmf_boost_dir}")
  file(CREATE_LINK /usr/include/boost "${_tmf_boost_dir}/boost" SYMBOLIC)
endif()
set(Boost_INCLUDE_DIR "${_tmf_boost_dir}" CACHE PATH "Boost headers for the Windows cross build")
set(Boost_NO_BOOST_CMAKE ON CACHE BOOL "")
