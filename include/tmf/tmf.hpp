// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Everything tmf offers: storages, transactions, the allocator, the container aliases and the B-trees.
#ifndef TMF_TMF_HPP
#define TMF_TMF_HPP

#include "allocator.hpp"
#include "btree.hpp"
#include "containers.hpp"
#include "error.hpp"
#include "migrate.hpp"
#include "options.hpp"
#include "schema.hpp"
#include "storage.hpp"
#include "version.hpp"

#endif  // TMF_TMF_HPP
