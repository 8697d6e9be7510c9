// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Boost.Interprocess, the peer of several benchmarks, included with GCC's null-pointer-check
// deletion off. With Boost 1.74 and GCC 12 at -O2, rbtree_best_fit's deallocate silently did
// nothing in bench_alloc (the segment filled up and allocate threw bad_alloc), depending on
// what else was inlined nearby; -O1, -fno-delete-null-pointer-checks or -fno-tree-pta cured
// it. The benchmarks also check that every Boost segment returns to its initial free size.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-delete-null-pointer-checks")
#endif
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/null_mutex.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
