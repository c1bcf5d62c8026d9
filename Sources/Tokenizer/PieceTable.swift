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
                if hashes[e] == h && lengths[e] == n && memcmp(a.baseAddress! + offsets[e], p, n) == 0 { return values[e] }
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
