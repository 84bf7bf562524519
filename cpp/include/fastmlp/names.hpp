// fastmlp/names.hpp — the names of an enum's values, from ONE table per enum.
//
// Each enum that users name by a string (Activation, Loss, OptimizerKind,
// Schedule::Kind, Init, FitStatus) declares beside itself a table
//
//   inline constexpr NameTable<Activation, 7> activation_names{"activation", {{
//       {Activation::linear, "linear"}, ...}}};
//
// in enum order (checked at compile time by in_enum_order), and every lookup,
// both ways, and the error message listing the choices are written once here.
// The bindings expose each table's names as a tuple (_core.ACTIVATIONS, ...).
#pragma once

#include <array>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace fastmlp {

template <typename Enum>
struct NameEntry {
    Enum value;
    const char* name;
};

template <typename Enum, std::size_t N>
struct NameTable {
    const char* what;  // what a value names, for messages: "activation", "loss", ...
    std::array<NameEntry<Enum>, N> entries;

    // True when entry i holds the enum's i-th value (0, 1, 2, ...).
    constexpr bool in_enum_order() const {
        for (std::size_t i = 0; i < N; ++i)
            if (static_cast<std::size_t>(entries[i].value) != i) return false;
        return true;
    }

    // "a, b or c"
    std::string choices() const {
        std::string text;
        for (std::size_t i = 0; i < N; ++i) {
            if (i) text += i + 1 == N ? " or " : ", ";
            text += entries[i].name;
        }
        return text;
    }

    // The value named `name`; throws std::invalid_argument listing the choices.
    Enum from_name(const std::string& name) const {
        for (const auto& entry : entries)
            if (name == entry.name) return entry.value;
        throw std::invalid_argument(std::string(what) + ": unknown name '" + name +
                                    "'; expected " + choices());
    }

    const char* name(Enum value) const {
        for (const auto& entry : entries)
            if (entry.value == value) return entry.name;
        return "?";
    }
};

}  // namespace fastmlp
