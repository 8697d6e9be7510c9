// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Schema safety: the structural fingerprint of a Root and of every type it reaches,
/// `tmf::schema_version` (a version number a user gives a type whose layout change the
/// fingerprint cannot see), the compile-time refusal of members that own memory of the
/// process, and readable type names.
///
/// C++20 has no reflection. An aggregate's members are counted by aggregate initialisation
/// with placeholders convertible to anything and seen through structured bindings (the
/// technique of Boost.PFR), so the walker needs aggregates without base classes, bit-fields
/// or more than `detail::max_members` members; everything else is a leaf seen by its name,
/// size and alignment (and, for class templates, through their type arguments: the element
/// types of containers, pairs, tuples, optionals, tmf::allocator's rebinds).
#ifndef TMF_SCHEMA_HPP
#define TMF_SCHEMA_HPP

#include <any>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <memory_resource>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#define TMF_HAS_CXXABI 1
#endif

#include "detail/checksum.hpp"
#include "detail/format.hpp"
#include "detail/schema_members.hpp"

namespace tmf {

/// A version number of `T`'s layout, part of the fingerprint of every Root that reaches `T`.
/// Specialise it (in namespace tmf) for a type whose layout change the fingerprint cannot
/// see: a class that is not an aggregate (seen only by name, size and alignment), a
/// member's meaning (units, encoding), or anything behind a raw pointer:
///
///     template <> struct tmf::schema_version<my_index> : std::integral_constant<std::uint32_t, 2> {};
template <class T>
struct schema_version : std::integral_constant<std::uint32_t, 0> {};

namespace detail {

template <class... T>
struct type_list {};

// -- names ------------------------------------------------------------------------------

/// `mangled` demangled (abi::__cxa_demangle), or itself where that is not available.
inline std::string demangle(const char* mangled) {
  if (*mangled == '*') ++mangled;  // GCC's mark of a type with internal linkage
#ifdef TMF_HAS_CXXABI
  int status = 0;
  char* s = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (s != nullptr && status == 0) {
    std::string out(s);
    std::free(s);
    return out;
  }
  std::free(s);
#endif
  return mangled;
}

/// A name of T (not a reference) that is the same for GCC and Clang: the Itanium-mangled
/// name when RTTI is on (taken from `T*`'s, which an incomplete T also has), else the
/// compiler's pretty function name (then only stable for one compiler).
template <class T>
std::string_view type_name() noexcept {
#if defined(__GXX_RTTI) || defined(__cpp_rtti)
  std::string_view s = typeid(T*).name();
  if (!s.empty() && s.front() == '*') s.remove_prefix(1);  // GCC's mark of internal linkage
  if (!s.empty() && s.front() == 'P') s.remove_prefix(1);  // "P<T>": pointer to T
  return s;
#else
  std::string_view s = __PRETTY_FUNCTION__;
  auto b = s.find("T = ");
  if (b == std::string_view::npos) return s;
  b += 4;
  auto e = s.find_first_of(";]", b);
  return s.substr(b, e - b);
#endif
}

/// T's name as a person reads it: demangled.
template <class T>
std::string pretty_type_name() {
#if defined(__GXX_RTTI) || defined(__cpp_rtti)
  return demangle(std::string(type_name<T>()).c_str());
#else
  return std::string(type_name<T>());
#endif
}

// -- what the walker sees --------------------------------------------------------------

template <class T>
struct std_array_of : std::false_type {};
template <class T, std::size_t N>
struct std_array_of<std::array<T, N>> : std::true_type {
  using element = T;
  static constexpr std::size_t size = N;
};

/// Names a class template itself, without arguments (its mangled name is the template's).
template <template <class...> class Tmpl>
struct template_id {};

/// The type arguments of a class template specialization whose parameters are all types,
/// and the template they are given to.
template <class T>
struct template_args {
  static constexpr bool is_template = false;
  using type = type_list<>;
};
template <template <class...> class Tmpl, class... A>
struct template_args<Tmpl<A...>> {
  static constexpr bool is_template = true;
  using type = type_list<A...>;
  using id = template_id<Tmpl>;
};

/// How a placeholder converts: to any type by value (so that it also initialises members
/// that cannot be copied: std::atomic, std::mutex), to non-class types only (then `{x}`
/// reaches a std::atomic's value constructor instead of being ambiguous with its deleted
/// copy constructor), or to an lvalue of any type (a reference member, to refuse it).
enum class probe_kind { any, scalar, lvalue };

/// Placeholder initialiser of one member (never evaluated).
template <std::size_t I, probe_kind Kind = probe_kind::any>
struct any_member {
  template <class U>
    requires(Kind == probe_kind::any || (Kind == probe_kind::scalar && !std::is_class_v<U>))
  operator U() const&& noexcept;  // NOLINT(google-explicit-constructor)
  template <class U>
    requires(Kind == probe_kind::lvalue)
  operator U&() const&& noexcept;  // NOLINT(google-explicit-constructor)
};

/// Aggregate-initialisation probes of T with one placeholder per member (`Kinds`, one a
/// member): braced (`{x}`), braced then one plain (`x`) of kind `Last`, or all plain.
template <class T, probe_kind... Kinds>
struct init_probe {
  template <std::size_t... I>
  static constexpr bool braced(std::index_sequence<I...>) {
    return requires { T{{any_member<I, Kinds>{}}...}; };
  }
  template <probe_kind Last, std::size_t... I>
  static constexpr bool braced_then_plain(std::index_sequence<I...>) {
    return requires { T{{any_member<I, Kinds>{}}..., any_member<sizeof...(I), Last>{}}; };
  }
  template <std::size_t... I>
  static constexpr bool plain(std::index_sequence<I...>) {
    return requires { T{any_member<I, Kinds>{}...}; };
  }
  using seq = std::make_index_sequence<sizeof...(Kinds)>;
  static constexpr bool ok = braced(seq{});
  static constexpr bool ok_then_plain = braced_then_plain<probe_kind::any>(seq{}) ||
                                        braced_then_plain<probe_kind::scalar>(seq{}) ||
                                        braced_then_plain<probe_kind::lvalue>(seq{});
  static constexpr bool ok_plain = plain(seq{});
};

/// Counts members by plain placeholders `x` (a C array counts as its elements: brace elision).
template <class T, probe_kind... Kinds>
consteval std::size_t count_plain() {
  if constexpr (sizeof...(Kinds) > max_members)
    return sizeof...(Kinds);
  else if constexpr (init_probe<T, Kinds..., probe_kind::any>::ok_plain)
    return count_plain<T, Kinds..., probe_kind::any>();
  else if constexpr (init_probe<T, Kinds..., probe_kind::scalar>::ok_plain)
    return count_plain<T, Kinds..., probe_kind::scalar>();
  else if constexpr (init_probe<T, Kinds..., probe_kind::lvalue>::ok_plain)
    return count_plain<T, Kinds..., probe_kind::lvalue>();
  else
    return sizeof...(Kinds);
}

/// Counts members by braced placeholders `{x}`, one a member whatever its type (a C array
/// too); where no `{x}` initialises the next member but an `x` does (an empty class; a
/// reference, for Clang), counts by plain placeholders instead (C arrays then unsupported).
template <class T, probe_kind... Kinds>
consteval std::size_t count_braced() {
  if constexpr (sizeof...(Kinds) > max_members)
    return sizeof...(Kinds);
  else if constexpr (init_probe<T, Kinds..., probe_kind::any>::ok)
    return count_braced<T, Kinds..., probe_kind::any>();
  else if constexpr (init_probe<T, Kinds..., probe_kind::scalar>::ok)
    return count_braced<T, Kinds..., probe_kind::scalar>();
  else if constexpr (init_probe<T, Kinds..., probe_kind::lvalue>::ok)
    return count_braced<T, Kinds..., probe_kind::lvalue>();
  else if constexpr (init_probe<T, Kinds...>::ok_then_plain)
    return count_plain<T>();
  else
    return sizeof...(Kinds);
}

/// The number of members of aggregate T.
template <class T>
consteval std::size_t member_count() {
  return count_braced<T>();
}

/// Whether T is complete here (a phantom template argument may never be).
template <class T>
constexpr bool is_complete() {
  return requires { sizeof(T); };
}
template <class T>
struct complete : std::bool_constant<is_complete<T>()> {};

/// Whether the walker looks inside T: a complete aggregate class that is not a union, not
/// empty and not a std::array.
template <class T>
inline constexpr bool walk_members_v =
    std::conjunction_v<std::is_class<T>, complete<T>, std::is_aggregate<T>, std::negation<std::is_empty<T>>,
                       std::negation<std::is_union<T>>, std::negation<std_array_of<T>>>;

struct member_type_lister {
  template <class... M>
  constexpr type_list<typename M::type...> operator()(M...) const noexcept {
    return {};
  }
};

/// The declared types of aggregate T's members, in order (a reference member's is a reference type).
template <class T>
using member_types = decltype(with_members<member_count<T>()>(std::declval<const T&>(), member_type_lister{}));

// -- compile-time refusal ----------------------------------------------------------------

template <class>
inline constexpr bool always_false = false;

template <class T>
struct is_std_allocator : std::false_type {};
template <class T>
struct is_std_allocator<std::allocator<T>> : std::true_type {};
template <class T>
struct is_std_allocator<std::pmr::polymorphic_allocator<T>> : std::true_type {};
template <class T>
struct has_std_allocator_arg : std::false_type {};
template <template <class...> class Tmpl, class... A>
struct has_std_allocator_arg<Tmpl<A...>> : std::bool_constant<(is_std_allocator<std::remove_cv_t<A>>::value || ...)> {};

template <class T>
struct is_unique_ptr : std::false_type {};
template <class T, class D>
struct is_unique_ptr<std::unique_ptr<T, D>> : std::true_type {};
template <class T>
struct is_shared_ptr : std::false_type {};
template <class T>
struct is_shared_ptr<std::shared_ptr<T>> : std::true_type {};
template <class T>
struct is_shared_ptr<std::weak_ptr<T>> : std::true_type {};
template <class T>
struct is_std_function : std::false_type {};
template <class S>
struct is_std_function<std::function<S>> : std::true_type {};

/// Each refusal is a static_assert in a function template whose arguments name the offending
/// type (`Member`) and the type that holds it (`Owner`): the compiler prints them with the
/// message ("In instantiation of ... [with Member = std::string; Owner = my_root]").
namespace refuse {
template <class Member, class Owner>
constexpr bool std_allocator() {
  static_assert(always_false<Member>,
                "tmf: a type reachable from Root allocates with std::allocator (std::string, std::vector<T>, "
                "std::map, std::pmr, ...): its memory is not in the file and is gone in the next process. Use "
                "tmf::string, tmf::vector<T>, tmf::map<K, V>, tmf::unordered_map<K, V>, ... (tmf/containers.hpp). "
                "Member = the offending type, Owner = the type holding it");
  return true;
}
template <class Member, class Owner>
constexpr bool unique_ptr() {
  static_assert(always_false<Member>,
                "tmf: std::unique_ptr cannot be reachable from Root: it owns memory of this process. Use a raw "
                "pointer to an object allocated with tmf::allocator, or a tmf::vector<T>. "
                "Member = the offending type, Owner = the type holding it");
  return true;
}
template <class Member, class Owner>
constexpr bool shared_ptr() {
  static_assert(always_false<Member>,
                "tmf: std::shared_ptr / std::weak_ptr cannot be reachable from Root: they own memory of this "
                "process. Use a raw pointer to an object allocated with tmf::allocator. "
                "Member = the offending type, Owner = the type holding it");
  return true;
}
template <class Member, class Owner>
constexpr bool function() {
  static_assert(always_false<Member>,
                "tmf: std::function cannot be reachable from Root: it holds heap memory and code addresses of this "
                "process. Store data that selects the behaviour (an enum, a tmf::string key). "
                "Member = the offending type, Owner = the type holding it");
  return true;
}
template <class Member, class Owner>
constexpr bool any() {
  static_assert(always_false<Member>,
                "tmf: std::any cannot be reachable from Root: it holds heap memory of this process. Use a "
                "std::variant of storable types. Member = the offending type, Owner = the type holding it");
  return true;
}
template <class Member, class Owner>
constexpr bool reference() {
  static_assert(always_false<Member>,
                "tmf: a reference member cannot be reachable from Root: it would still refer to this process's "
                "objects after a restart. Use a raw pointer into the storage. "
                "Member = the offending type, Owner = the type holding it");
  return true;
}
template <class Member, class Owner>
constexpr bool polymorphic() {
  static_assert(always_false<Member>,
                "tmf: a polymorphic type (virtual functions) cannot be reachable from Root: its vtable pointer does "
                "not survive a restart. Use a std::variant of the alternatives, or an enum tag. "
                "Member = the offending type, Owner = the type holding it");
  return true;
}
template <class Member, class Owner>
constexpr bool code_pointer() {
  static_assert(always_false<Member>,
                "tmf: a pointer to a function or member function cannot be reachable from Root: code addresses "
                "change between runs. Store an enum or an index into a table of functions. "
                "Member = the offending type, Owner = the type holding it");
  return true;
}
}  // namespace refuse

template <class T, class... Seen>
constexpr bool check_storable();

template <class Owner, class... Seen, class... M>
constexpr bool check_all(type_list<M...>) {
  return (check_storable<M, Owner, Seen...>() && ...);
}

/// Refuses, with a static_assert, anything reachable from T that owns memory of this
/// process. `Seen` is the path from the Root (innermost first), which stops recursion.
/// Always true: a refusal is a compile error.
template <class T, class... Seen>
constexpr bool check_storable() {
  using U = std::remove_cv_t<T>;
  using owner = std::tuple_element_t<0, std::tuple<Seen..., void>>;
  if constexpr ((std::is_same_v<U, Seen> || ...)) {
    return true;
  } else if constexpr (std::is_reference_v<T>) {
    return refuse::reference<T, owner>();
  } else if constexpr ((std::is_pointer_v<U> && std::is_function_v<std::remove_pointer_t<U>>) ||
                       std::is_member_function_pointer_v<U>) {
    return refuse::code_pointer<U, owner>();
  } else if constexpr (std::is_array_v<U>) {
    return check_storable<std::remove_all_extents_t<U>, Seen...>();
  } else if constexpr (!std::is_class_v<U> || !is_complete<U>()) {
    return true;  // scalars, raw pointers (into the storage), enums; unions' members are not seen
  } else if constexpr (std::is_polymorphic_v<U>) {
    return refuse::polymorphic<U, owner>();
  } else if constexpr (is_std_allocator<U>::value || has_std_allocator_arg<U>::value) {
    return refuse::std_allocator<U, owner>();
  } else if constexpr (is_unique_ptr<U>::value) {
    return refuse::unique_ptr<U, owner>();
  } else if constexpr (is_shared_ptr<U>::value) {
    return refuse::shared_ptr<U, owner>();
  } else if constexpr (is_std_function<U>::value) {
    return refuse::function<U, owner>();
  } else if constexpr (std::is_same_v<U, std::any>) {
    return refuse::any<U, owner>();
  } else if constexpr (std_array_of<U>::value) {
    return check_storable<typename std_array_of<U>::element, U, Seen...>();
  } else if constexpr (walk_members_v<U>) {
    return check_all<U, Seen...>(member_types<U>{});
  } else {
    return check_all<U, Seen...>(typename template_args<U>::type{});
  }
}

// -- the structural fingerprint -----------------------------------------------------------

/// Storage whose address the walker takes the members' addresses in; no T is ever built.
template <class T>
union layout_probe {
  layout_probe() {}  // NOLINT(modernize-use-equals-default): no member is initialised
  ~layout_probe() {}
  T value;
};

template <class T>
const T& probe_object() {
  static layout_probe<T> p;
  return p.value;
}

template <class T>
struct type_tag {
  static constexpr char id = 0;
};

/// What the walk produces: `canon` (hashed: mangled names, sizes, offsets, versions) and
/// `text` (the same for people: demangled).
struct schema_walk {
  std::string canon;
  std::string text;
  std::vector<const void*> path;  ///< the class types being walked, outermost first
};

template <class T>
void walk_type(schema_walk& w, bool with_text);

template <class T>
void walk_leaf_numbers(schema_walk& w) {
  if constexpr (std::is_function_v<T>) {
    w.canon += ",0,0";
  } else {
    w.canon += "," + std::to_string(sizeof(T)) + "," + std::to_string(alignof(T));
  }
  w.canon += "," + std::to_string(schema_version<T>::value) + ";";
}

template <class T>
std::string size_text() {
  std::string s = " (" + std::to_string(sizeof(T)) + " B";
  if (schema_version<T>::value != 0) s += ", version " + std::to_string(schema_version<T>::value);
  return s + ")";
}

template <class... A>
void walk_args(schema_walk& w, bool with_text, type_list<A...>) {
  // Aggregate arguments (a container's element type) and versioned ones are shown; the rest
  // (allocators, comparators) only hashed.
  ((walk_type<A>(w, with_text && (walk_members_v<std::remove_cv_t<A>> || std::is_array_v<A> ||
                                  schema_version<std::remove_cv_t<A>>::value != 0)),
    w.canon += ';'),
   ...);
}

template <class T>
void walk_members(schema_walk& w, bool with_text) {
  const T& obj = probe_object<T>();
  const auto* base = reinterpret_cast<const unsigned char*>(&obj);
  constexpr std::size_t n = member_count<T>();
  w.canon += "S" + std::to_string(n) + "," + std::to_string(sizeof(T)) + "," + std::to_string(alignof(T)) + "," +
             std::to_string(schema_version<T>::value) + "{";
  if (with_text) w.text += size_text<T>() + " {";
  with_members<n>(obj, [&](auto... m) {
    bool first = true;
    auto one = [&](auto member) {
      using M = typename decltype(member)::type;
      const auto offset = static_cast<std::size_t>(static_cast<const unsigned char*>(member.address) - base);
      w.canon += "@" + std::to_string(offset) + ":";
      if (with_text) {
        w.text += first ? "" : ", ";
        w.text += "@" + std::to_string(offset) + " ";
      }
      first = false;
      walk_type<M>(w, with_text);
    };
    (one(m), ...);
  });
  w.canon += "}";
  if (with_text) w.text += "}";
}

template <class T>
void walk_type(schema_walk& w, bool with_text) {
  using U = std::remove_cv_t<std::remove_reference_t<T>>;
  if constexpr (std::is_void_v<U>) {
    w.canon += "v;";
    if (with_text) w.text += "void";
  } else if constexpr (std::is_array_v<U>) {
    w.canon += "[" + std::to_string(std::extent_v<U>) + "]";
    walk_type<std::remove_extent_t<U>>(w, with_text);
    if (with_text) w.text += "[" + std::to_string(std::extent_v<U>) + "]";
  } else if constexpr (!is_complete<U>()) {
    w.canon += "I";  // an incomplete type (a phantom template argument): its name only
    w.canon += type_name<U>();
    w.canon += ";";
    if (with_text) w.text += pretty_type_name<U>();
  } else if constexpr (!std::is_class_v<U> || std::is_union_v<U>) {
    w.canon += "L";
    w.canon += type_name<U>();
    walk_leaf_numbers<U>(w);
    if (with_text) w.text += pretty_type_name<U>();
  } else {
    const void* tag = &type_tag<U>::id;
    for (std::size_t i = 0; i < w.path.size(); ++i) {
      if (w.path[i] == tag) {  // a recursive type: refer to the enclosing walk
        w.canon += "^" + std::to_string(w.path.size() - i) + ";";
        if (with_text) w.text += pretty_type_name<U>() + " (recursive)";
        return;
      }
    }
    w.path.push_back(tag);
    if (with_text) w.text += pretty_type_name<U>();
    if constexpr (std_array_of<U>::value) {
      w.canon += "A" + std::to_string(std_array_of<U>::size);
      walk_leaf_numbers<U>(w);
      if (with_text) w.text += " of ";
      walk_type<typename std_array_of<U>::element>(w, with_text);
    } else if constexpr (walk_members_v<U>) {
      walk_members<U>(w, with_text);
    } else {
      // A class template specialization is known by its template and its arguments' walks
      // (std::vector<a> and std::vector<b> are alike if a and b are); another class by name.
      using targs = template_args<U>;
      if constexpr (targs::is_template) {
        w.canon += "T";
        w.canon += type_name<typename targs::id>();
      } else {
        w.canon += "C";
        w.canon += type_name<U>();
      }
      walk_leaf_numbers<U>(w);
      if (with_text) w.text += size_text<U>();
      w.canon += "(";
      using args = typename targs::type;
      if constexpr (!std::is_same_v<args, type_list<>>) {
        const std::size_t before = w.text.size();
        if (with_text) w.text += " of ";
        const std::size_t after = w.text.size();
        walk_args(w, with_text, args{});
        if (w.text.size() == after) w.text.resize(before);  // no argument shown
      }
      w.canon += ")";
    }
    w.path.pop_back();
  }
}

/// The structural hash of T: its layout and that of everything it reaches, without T's own
/// name (an aggregate is known by its members).
template <class T>
std::uint64_t structure_hash() {
  schema_walk w;
  walk_type<T>(w, false);
  return checksum(w.canon.data(), w.canon.size(), 0x746d662d73636831ULL);
}

/// What a storage<Root> records and checks: Root's name, size and alignment and the
/// structural fingerprint (which includes the name). Computed once per type.
template <class Root>
const root_fingerprint& fingerprint_of() {
  static const root_fingerprint fp = [] {
    schema_walk w;
    w.canon = "R";
    w.canon += type_name<Root>();
    w.canon += ";";
    walk_type<Root>(w, true);
    root_fingerprint f;
    f.size = sizeof(Root);
    f.align = alignof(Root);
    f.schema = checksum(w.canon.data(), w.canon.size(), 0x746d662d73636831ULL);
    f.name = pretty_type_name<Root>();
    f.layout = std::move(w.text);
    return f;
  }();
  return fp;
}

}  // namespace detail

/// The schema fingerprint a `storage<Root>` records in its file and checks at every open:
/// Root's name, size, alignment, and recursively every reachable type's layout and
/// schema_version.
template <class Root>
std::uint64_t schema_fingerprint() {
  return detail::fingerprint_of<Root>().schema;
}

/// The layout behind schema_fingerprint(), as text (as error messages show it).
template <class Root>
std::string schema_layout() {
  return detail::fingerprint_of<Root>().layout;
}

}  // namespace tmf

#endif  // TMF_SCHEMA_HPP
