// fastmlp/random.hpp — the seeded generator each network owns.
//
// xoshiro256** (Blackman & Vigna), seeded through splitmix64. Written out here
// rather than taken from <random>, whose distributions differ between standard
// libraries: the same seed gives the same numbers with any compiler.
//
// The state is never all zero: splitmix64 gives four zero words for no seed,
// xoshiro's step maps a non-zero state to a non-zero one, and set_state refuses
// zeros. (From all zeros every draw would be 0, and below()'s rejection loop,
// hence a shuffled fit, would never end.)
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "fastmlp/common.hpp"

namespace fastmlp {

class Rng {
public:
    explicit Rng(std::uint64_t seed = 0) { reseed(seed); }

    void reseed(std::uint64_t seed) {
        std::uint64_t x = seed;
        for (auto& word : state_) word = splitmix64(x);
        has_spare_ = false;
    }

    std::uint64_t next() {
        const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
        const std::uint64_t t = state_[1] << 17;
        state_[2] ^= state_[0];
        state_[3] ^= state_[1];
        state_[1] ^= state_[2];
        state_[0] ^= state_[3];
        state_[2] ^= t;
        state_[3] = rotl(state_[3], 45);
        return result;
    }

    // Uniform in [0, 1), 53 random bits.
    double uniform() { return double(next() >> 11) * 0x1.0p-53; }

    // Uniform integer in [0, bound), bound >= 1, without modulo bias (Lemire 2019).
    // The rejection loop draws again with probability below bound / 2^64 each
    // time (never 1, as the state is never all zero).
    std::uint64_t below(std::uint64_t bound) {
        std::uint64_t x = next();
        __uint128_t m = __uint128_t(x) * bound;
        std::uint64_t low = std::uint64_t(m);
        if (low < bound) {
            const std::uint64_t threshold = (0 - bound) % bound;
            while (low < threshold) {
                x = next();
                m = __uint128_t(x) * bound;
                low = std::uint64_t(m);
            }
        }
        return std::uint64_t(m >> 64);
    }

    // Standard normal (Box–Muller; the second value of each pair is kept).
    double normal() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        double u1 = uniform();
        while (u1 <= 0.0) u1 = uniform();
        const double u2 = uniform();
        const double radius = std::sqrt(-2.0 * std::log(u1));
        const double angle = 6.283185307179586477 * u2;
        spare_ = radius * std::sin(angle);
        has_spare_ = true;
        return radius * std::cos(angle);
    }

    // The whole state, to save and restore a generator exactly (pickling a network).
    struct State {
        std::uint64_t words[4];
        bool has_spare;
        double spare;
    };
    State state() const { return State{{state_[0], state_[1], state_[2], state_[3]}, has_spare_, spare_}; }
    // Refuses (std::invalid_argument) four zero words and a non-finite spare.
    static void check_state(const State& s) {
        require((s.words[0] | s.words[1] | s.words[2] | s.words[3]) != 0,
                "rng_words: all four are zero, a state the generator never reaches "
                "(xoshiro256** would draw 0 forever)");
        require(std::isfinite(s.spare),
                "spare: expected a finite number, got " + std::to_string(s.spare));
    }
    void set_state(const State& s) {
        check_state(s);
        for (int i = 0; i < 4; ++i) state_[i] = s.words[i];
        has_spare_ = s.has_spare;
        spare_ = s.spare;
    }

private:
    static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    static std::uint64_t splitmix64(std::uint64_t& x) {
        std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }

    std::uint64_t state_[4];
    double spare_ = 0;
    bool has_spare_ = false;
};

}  // namespace fastmlp
