// PieceTable: byte strings → ids, looked up by (pointer, length) without building a key.
//
// Encoding probes the table once per candidate pair; a Dictionary<[UInt8], Int> would allocate an array per
// probe. This is open addressing over FNV-1a hashes with the keys packed in one byte arena.

struct PieceTable: Sendable {
    private var slots: [Int32]  // index into entries, -1 when empty
    private var hashes: [UInt64] = []
    private var offsets: [Int] = []
    private var lengths: [Int] = []
    private var values: [Int32] = []
    private var arena: [UInt8] = []
    private let mask: Int

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
    }

    @inline(__always) static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<n { h = (h ^ UInt64(p[i])) &* 0x100_0000_01b3 }
        return h
    }

    /// Adds key → value; returns false (and changes nothing) when the key is already present.
    @discardableResult
    mutating func insert(_ key: [UInt8], _ value: Int32) -> Bool {
        if key.withUnsafeBufferPointer({ find($0.baseAddress!, $0.count) }) != nil { return false }
        let h = key.withUnsafeBufferPointer { PieceTable.hash($0.baseAddress!, $0.count) }
        var slot = Int(truncatingIfNeeded: h) & mask
        while slots[slot] >= 0 { slot = (slot + 1) & mask }
        slots[slot] = Int32(values.count)
        hashes.append(h)
        offsets.append(arena.count)
        lengths.append(key.count)
        values.append(value)
        arena.append(contentsOf: key)
        return true
    }

    @inline(__always) func find(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32? {
        guard n > 0 else { return nil }
        let h = PieceTable.hash(p, n)
        var slot = Int(truncatingIfNeeded: h) & mask
        return arena.withUnsafeBufferPointer { a -> Int32? in
            while true {
                let e = Int(slots[slot])
                if e < 0 { return nil }
                if hashes[e] == h && lengths[e] == n && memcmp(a.baseAddress! + offsets[e], p, n) == 0 {
                    return values[e]
                }
                slot = (slot + 1) & mask
            }
        }
    }

    func find(_ key: [UInt8]) -> Int32? {
        key.withUnsafeBufferPointer { $0.count == 0 ? nil : find($0.baseAddress!, $0.count) }
    }
}

#if canImport(Glibc)
    import Glibc
#else
    import Darwin
#endif

/// UInt64 → Int32 by open addressing with a multiplicative hash: the trainer's pair ids, looked up several
/// times per merged occurrence, where Dictionary's seeded SipHash dominated the profile.
struct PairIdTable {
    private var keys: [UInt64]
    private var values: [Int32]
    private var shift: UInt64
    private(set) var count = 0
    private static let empty = UInt64.max

    init() {
        keys = [UInt64](repeating: Self.empty, count: 1 << 16)
        values = [Int32](repeating: -1, count: 1 << 16)
        shift = 64 - 16
    }

    @inline(__always) private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// The id of `key`, or nil.
    @inline(__always) func get(_ key: UInt64) -> Int32? {
        let mask = keys.count - 1
        var i = slot(key)
        while true {
            let k = keys[i]
            if k == key { return values[i] }
            if k == Self.empty { return nil }
            i = (i + 1) & mask
        }
    }

    /// Adds a key known to be absent.
    mutating func insert(_ key: UInt64, _ value: Int32) {
        if (count + 1) * 2 > keys.count { grow() }
        let mask = keys.count - 1
        var i = slot(key)
        while keys[i] != Self.empty { i = (i + 1) & mask }
        keys[i] = key
        values[i] = value
        count += 1
    }

    private mutating func grow() {
        let (oldKeys, oldValues) = (keys, values)
        keys = [UInt64](repeating: Self.empty, count: oldKeys.count * 2)
        values = [Int32](repeating: -1, count: oldKeys.count * 2)
        shift -= 1
        count = 0
        for (k, v) in zip(oldKeys, oldValues) where k != Self.empty { insert(k, v) }
    }
}

/// Words (code point sequences) → frequency, looked up by (pointer, length) so that counting the words of
/// every sentence allocates nothing per word; the keys live end to end in one arena.
struct WordTable {
    private var slots: [Int32]  // index into the entries, −1 when empty
    private var hashes: [UInt64] = []
    private(set) var offsets: [Int] = []
    private(set) var lengths: [Int] = []
    private(set) var counts: [Int] = []
    private(set) var arena: [UInt32] = []

    init() { slots = [Int32](repeating: -1, count: 1 << 16) }

    var count: Int { counts.count }

    func word(_ i: Int) -> ArraySlice<UInt32> { arena[offsets[i]..<(offsets[i] + lengths[i])] }

    @inline(__always) static func hash(_ p: UnsafePointer<UInt32>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<n { h = (h ^ UInt64(p[i])) &* 0x100_0000_01b3 }
        return h ^ (h >> 29)
    }

    mutating func add(_ p: UnsafePointer<UInt32>, _ n: Int, _ frequency: Int) {
        let h = Self.hash(p, n)
        var i = Int(truncatingIfNeeded: h) & (slots.count - 1)
        while true {
            let e = Int(slots[i])
            if e < 0 { break }
            if hashes[e] == h && lengths[e] == n
                && arena.withUnsafeBufferPointer({ memcmp($0.baseAddress! + offsets[e], p, 4 * n) == 0 })
            {
                counts[e] += frequency
                return
            }
            i = (i + 1) & (slots.count - 1)
        }
        slots[i] = Int32(counts.count)
        hashes.append(h)
        offsets.append(arena.count)
        lengths.append(n)
        counts.append(frequency)
        arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        if counts.count * 2 > slots.count { rehash() }
    }

    /// Adds every word of `other` with its frequency.
    mutating func add(_ other: WordTable) {
        other.arena.withUnsafeBufferPointer { a in
            for e in 0..<other.count { add(a.baseAddress! + other.offsets[e], other.lengths[e], other.counts[e]) }
        }
    }

    private mutating func rehash() {
        slots = [Int32](repeating: -1, count: slots.count * 2)
        for e in hashes.indices {
            var i = Int(truncatingIfNeeded: hashes[e]) & (slots.count - 1)
            while slots[i] >= 0 { i = (i + 1) & (slots.count - 1) }
            slots[i] = Int32(e)
        }
    }
}
