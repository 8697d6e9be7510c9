// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The standard containers with `tmf::allocator`, and `tmf::hash`.
#ifndef TMF_CONTAINERS_HPP
#define TMF_CONTAINERS_HPP

#include <deque>
#include <functional>
#include <list>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "allocator.hpp"

namespace tmf {

/// The default hasher of the unordered aliases: std::hash<K>. std::hash has no
/// specialisation for strings with other allocators, so strings hash as their string_view
/// (heterogeneous: a std::string_view hashes the same). libstdc++'s hashes have no
/// per-process seed, as a file shared by processes needs.
template <class K>
struct hash : std::hash<K> {};

template <class C, class Traits>
struct hash<std::basic_string<C, Traits, allocator<C>>> {
  using is_transparent = void;
  std::size_t operator()(std::basic_string_view<C, Traits> s) const noexcept {
    return std::hash<std::basic_string_view<C, Traits>>{}(s);
  }
};

// The ordered and unordered aliases default to the transparent std::less<> and
// std::equal_to<>, so that a reader can look a key up by a value of another type (a string
// key by `const char*` or std::string_view) without building a key_type, which for
// tmf::string would need an allocator and so a writer. For other keys they compare like
// std::less<K> and std::equal_to<K>.
template <class T>
using vector = std::vector<T, allocator<T>>;
template <class T>
using deque = std::deque<T, allocator<T>>;
template <class T>
using list = std::list<T, allocator<T>>;
using string = std::basic_string<char, std::char_traits<char>, allocator<char>>;
template <class K, class V, class Compare = std::less<>>
using map = std::map<K, V, Compare, allocator<std::pair<const K, V>>>;
template <class K, class V, class Compare = std::less<>>
using multimap = std::multimap<K, V, Compare, allocator<std::pair<const K, V>>>;
template <class K, class Compare = std::less<>>
using set = std::set<K, Compare, allocator<K>>;
template <class K, class V, class Hash = hash<K>, class Equal = std::equal_to<>>
using unordered_map = std::unordered_map<K, V, Hash, Equal, allocator<std::pair<const K, V>>>;
template <class K, class Hash = hash<K>, class Equal = std::equal_to<>>
using unordered_set = std::unordered_set<K, Hash, Equal, allocator<K>>;

}  // namespace tmf

#endif  // TMF_CONTAINERS_HPP
