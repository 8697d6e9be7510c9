// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The library's version.
#ifndef TMF_VERSION_HPP
#define TMF_VERSION_HPP

#define TMF_VERSION_MAJOR 0
#define TMF_VERSION_MINOR 1
#define TMF_VERSION_PATCH 0
/// major * 10000 + minor * 100 + patch
#define TMF_VERSION (TMF_VERSION_MAJOR * 10000 + TMF_VERSION_MINOR * 100 + TMF_VERSION_PATCH)

namespace tmf {
/// The version as "major.minor.patch".
inline constexpr const char* version_string = "0.1.0";
}  // namespace tmf

#endif  // TMF_VERSION_HPP
