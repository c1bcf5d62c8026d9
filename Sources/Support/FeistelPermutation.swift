// FeistelPermutation: a seeded bijection of 0..<count computed one index at a time, in O(1) memory.
//
// A balanced Feistel network over 2·h bits (the smallest even width whose range covers `count`) is a
// permutation of 0..<2^(2h) for any round function; cycle-walking (apply it again while the result is
// ≥ count) restricts it to a permutation of 0..<count. 2^(2h) < 4·count, so a walk takes under 4 rounds
// of the network on average. This replaces a stored shuffled array: at 2.5e9 windows that array alone was
// 10 GB, and it had to be rebuilt at every epoch.
public struct FeistelPermutation: Sendable, Equatable {
    public let count: Int
    private let halfBits: Int
    private let halfMask: UInt64
    private let keys: [UInt64]
    static let rounds = 6

    public init(count: Int, seed: UInt64) {
        precondition(count >= 0, "a permutation of \(count) elements")
        self.count = count
        let bits = max(2, UInt64.bitWidth - UInt64(max(count - 1, 1)).leadingZeroBitCount)
        halfBits = (bits + 1) / 2
        halfMask = (1 << UInt64(halfBits)) - 1
        var rng = SplitMix64(seed: seed)
        keys = (0..<Self.rounds).map { _ in rng.next() }
    }

    /// The round function: SplitMix64's finaliser of the half block and the round key.
    @inline(__always)
    private func mix(_ x: UInt64, _ round: Int) -> UInt64 {
        var z = x &+ keys[round]
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return (z ^ (z >> 31)) & halfMask
    }

    @inline(__always)
    private func network(_ x: UInt64) -> UInt64 {
        var left = x >> UInt64(halfBits), right = x & halfMask
        for round in 0..<Self.rounds {
            (left, right) = (right, left ^ mix(right, round))
        }
        return left << UInt64(halfBits) | right
    }

    @inline(__always)
    private func inverseNetwork(_ x: UInt64) -> UInt64 {
        var left = x >> UInt64(halfBits), right = x & halfMask
        for round in (0..<Self.rounds).reversed() {
            (left, right) = (right ^ mix(left, round), left)
        }
        return left << UInt64(halfBits) | right
    }

    /// The image of `index`.
    public subscript(index: Int) -> Int {
        precondition(index >= 0 && index < count, "index \(index) outside 0..<\(count)")
        var x = network(UInt64(index))
        while x >= UInt64(count) { x = network(x) }
        return Int(x)
    }

    /// The index whose image is `value`: the walk backwards.
    public func inverse(_ value: Int) -> Int {
        precondition(value >= 0 && value < count, "value \(value) outside 0..<\(count)")
        var x = inverseNetwork(UInt64(value))
        while x >= UInt64(count) { x = inverseNetwork(x) }
        return Int(x)
    }
}
