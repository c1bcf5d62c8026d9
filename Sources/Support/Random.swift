// Deterministic random numbers for initialisation, synthetic data and data order: the same seed gives the
// same parameters and the same order on every rank and every machine (no dependence on the platform's
// generator). Not for anything secret.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to seed weights and tokens.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The generator `n` draws further on, in O(1): SplitMix64's state is a counter.
    public mutating func skip(_ n: UInt64) { state &+= n &* 0x9E37_79B9_7F4A_7C15 }

    /// Uniform in (0, 1], 53 bits.
    public mutating func nextUnit() -> Double { Double((next() >> 11) + 1) * 0x1p-53 }

    /// Fisher–Yates from the back, drawing j's partner as next() % (j + 1): the one seeded shuffle every
    /// data order uses (SFT examples, preference pairs, a source's windows), so a checkpoint taken under one
    /// version resumes with the same order under the next.
    public mutating func shuffle<C: MutableCollection & RandomAccessCollection>(_ items: inout C) where C.Index == Int {
        guard items.count > 1 else { return }
        for j in stride(from: items.count - 1, to: 0, by: -1) {
            items.swapAt(items.startIndex + j, items.startIndex + Int(next() % UInt64(j + 1)))
        }
    }

    /// The permutation of 0..<count that `shuffle` makes from a fresh generator seeded with `seed`.
    public static func permutation(count: Int, seed: UInt64) -> [Int] {
        var order = Array(0..<count)
        var rng = SplitMix64(seed: seed)
        rng.shuffle(&order)
        return order
    }

    /// Standard normal by Box–Muller.
    public mutating func nextGaussian() -> Double {
        let u1 = nextUnit(), u2 = nextUnit()
        return (-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2)
    }
}

#if canImport(Glibc)
    import Glibc
    @inline(__always) private func _log(_ x: Double) -> Double { Glibc.log(x) }
    @inline(__always) private func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
    import Darwin
    @inline(__always) private func _log(_ x: Double) -> Double { Darwin.log(x) }
    @inline(__always) private func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif
