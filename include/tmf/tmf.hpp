// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Everything tmf offers: storages, transactions, the allocator and the container aliases.
#pragma once

#include "allocator.hpp"
#include "containers.hpp"
#include "error.hpp"
#include "options.hpp"
#include "storage.hpp"
#include "version.hpp"
