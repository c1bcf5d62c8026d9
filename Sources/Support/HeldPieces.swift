// HeldPieces: which parts of a flat buffer (a model's parameters, gradients, AdamW's moments) one rank keeps,
// and where each sits in the rank's own, shorter buffer. Replicated buffers hold one piece, the whole; a
// sharded buffer holds one piece of every unit (the embedding, each block, the heads), laid end to end in
// unit order. What this is not: who owns what (the partition decides) or how pieces travel (Distributed).

public struct HeldPieces: Equatable, Sendable {
    public struct Piece: Equatable, Sendable {
        /// The global flat range.
        public let range: Range<Int>
        /// Where its first element sits in the rank's buffer.
        public let local: Int
    }

    /// Non-empty pieces in ascending global order, packed from local offset 0.
    public let pieces: [Piece]
    /// Elements the rank's buffer holds: the pieces' total.
    public let count: Int

    /// The pieces of `ranges` (ascending, disjoint; empty ones are dropped), packed end to end.
    public init(_ ranges: [Range<Int>]) {
        var pieces: [Piece] = [], local = 0
        for range in ranges where !range.isEmpty {
            precondition(
                pieces.last.map { $0.range.upperBound <= range.lowerBound } ?? true,
                "pieces out of order or overlapping")
            pieces.append(Piece(range: range, local: local))
            local += range.count
        }
        self.pieces = pieces
        count = local
    }

    /// All of a buffer of `count` elements.
    public static func whole(_ count: Int) -> HeldPieces { HeldPieces([0..<count]) }

    public var ranges: [Range<Int>] { pieces.map(\.range) }

    /// True when this is all of 0..<total.
    public func isWhole(of total: Int) -> Bool { count == total && (pieces.first?.range.lowerBound ?? 0) == 0 }

    /// The local index of global element `index`, or nil when this rank does not hold it.
    public func local(_ index: Int) -> Int? {
        var lo = 0, hi = pieces.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if pieces[mid].range.upperBound <= index { lo = mid + 1 } else { hi = mid }
        }
        guard lo < pieces.count, pieces[lo].range.contains(index) else { return nil }
        return pieces[lo].local + index - pieces[lo].range.lowerBound
    }

    /// Each held part of `range`: its global range and local offset.
    public func parts(of range: Range<Int>) -> [Piece] {
        pieces.compactMap { p in
            let lo = max(p.range.lowerBound, range.lowerBound), hi = min(p.range.upperBound, range.upperBound)
            return lo < hi ? Piece(range: lo..<hi, local: p.local + lo - p.range.lowerBound) : nil
        }
    }
}

extension Array where Element == Int {
    /// In ascending starts (a prefix sum), the index of the last start at or below `position`: the segment
    /// holding it. The array's last element is the end of the last segment and is never returned.
    public func segment(holding position: Int) -> Int {
        var (lo, hi) = (0, count - 2)
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if self[mid] <= position { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }
}
