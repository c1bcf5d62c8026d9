// PairMerger: the merge loop of BPE training, with exact pair counts.
//
// Words are arrays of symbol ids with a frequency. Each pair of adjacent symbols has a count, the words it
// occurs in, and whether its concatenation may become a piece (SentencePiece's IsValidSentencePiece). A
// max-heap with lazy invalidation picks the best pair; applying it rewrites only the words that hold it.

struct PairMerger {
    let options: BPETrainerOptions

    private var symbolScalars: [[UInt32]] = []
    private var symbolIds: [[UInt32]: Int32] = [:]
    private var wordSymbols: [[Int32]] = []
    private var wordFreq: [Int] = []

    private var pairIds: [UInt64: Int32] = [:]
    private var pairCount: [Int] = []
    private var pairLeft: [Int32] = []
    private var pairRight: [Int32] = []
    private var pairValid: [Bool] = []
    private var pairActive: [Bool] = []
    private var pairMerged: [[UInt32]] = []
    private var pairBytes: [[UInt8]] = []
    private var pairWords: [[Int32]] = []
    private var pairLength: [Int32] = []  // code points of the merged piece
    /// The count of the newest heap entry of each pair (the heap may hold older ones too).
    private var pairHeapCount: [Int] = []
    private var heap = BinaryHeap<(count: Int, pair: Int32)>()

    init(options: BPETrainerOptions) { self.options = options }

    /// Learns up to `wanted` merges; returns the new pieces' UTF-8 bytes in merge order.
    mutating func run(words: [[UInt32]: Int], wanted: Int) -> [[UInt8]] {
        // Deterministic order whatever the dictionary's: by frequency, then by code points.
        for (word, freq) in words.sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key.lexicographicallyPrecedes($1.key) }) {
            wordSymbols.append(word.map { symbol([$0]) })
            wordFreq.append(freq)
        }
        for w in wordSymbols.indices { countPairs(of: w, sign: 1, touched: nil) }
        for p in pairCount.indices where pairValid[p] && pairCount[p] > 0 { push(Int32(p)) }
        var pairStamp = [Int32](repeating: -1, count: pairCount.count)

        var merges: [[UInt8]] = []
        var emitted = Set<[UInt8]>()
        var wordStamp = [Int32](repeating: -1, count: wordSymbols.count)
        var touched: [Int32] = []
        while merges.count < wanted, let best = popBest() {
            pairActive[Int(best)] = false
            // A piece reached by two paths ("aa"+"a", "a"+"aa") is kept once; the second path is dropped.
            guard emitted.insert(pairBytes[Int(best)]).inserted else { continue }
            merges.append(pairBytes[Int(best)])
            let a = pairLeft[Int(best)], b = pairRight[Int(best)]
            let merged = symbol(pairMerged[Int(best)])
            touched.removeAll(keepingCapacity: true)
            for w in pairWords[Int(best)] where wordStamp[Int(w)] != Int32(merges.count) {
                wordStamp[Int(w)] = Int32(merges.count)
                let old = wordSymbols[Int(w)]
                var replaced: [Int32] = []
                replaced.reserveCapacity(old.count)
                var i = 0, changed = false
                while i < old.count {
                    if i + 1 < old.count && old[i] == a && old[i + 1] == b {
                        replaced.append(merged)
                        i += 2
                        changed = true
                    } else {
                        replaced.append(old[i])
                        i += 1
                    }
                }
                guard changed else { continue }
                countPairs(of: Int(w), sign: -1, touched: &touched)
                wordSymbols[Int(w)] = replaced
                countPairs(of: Int(w), sign: 1, touched: &touched)
            }
            // Counts that rose need a fresh heap entry now; counts that fell are corrected when popped.
            if pairStamp.count < pairCount.count { pairStamp += [Int32](repeating: -1, count: pairCount.count - pairStamp.count) }
            for p in touched where pairStamp[Int(p)] != Int32(merges.count) {
                pairStamp[Int(p)] = Int32(merges.count)
                if pairActive[Int(p)] && pairValid[Int(p)] && pairCount[Int(p)] > pairHeapCount[Int(p)] { push(p) }
            }
        }
        return merges
    }

    // MARK: - Symbols and pairs

    private mutating func symbol(_ scalars: [UInt32]) -> Int32 {
        if let id = symbolIds[scalars] { return id }
        let id = Int32(symbolScalars.count)
        symbolScalars.append(scalars)
        symbolIds[scalars] = id
        return id
    }


    private mutating func pair(_ a: Int32, _ b: Int32) -> Int32 {
        let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
        if let id = pairIds[key] { return id }
        let id = Int32(pairCount.count)
        let scalars = symbolScalars[Int(a)] + symbolScalars[Int(b)]
        pairIds[key] = id
        pairCount.append(0)
        pairLeft.append(a)
        pairLength.append(Int32(scalars.count))
        pairHeapCount.append(0)
        pairRight.append(b)
        pairMerged.append(scalars)
        pairBytes.append(Array(String(String.UnicodeScalarView(scalars.compactMap(Unicode.Scalar.init))).utf8))
        pairValid.append(isValidPiece(scalars))
        pairActive.append(true)
        pairWords.append([])
        return id
    }

    /// Adds (sign 1) or removes (sign −1) word w's adjacent pairs, weighted by its frequency.
    private mutating func countPairs(of w: Int, sign: Int, touched: UnsafeMutablePointer<[Int32]>?) {
        let symbols = wordSymbols[w]
        guard symbols.count > 1 else { return }
        for i in 0..<(symbols.count - 1) {
            let p = pair(symbols[i], symbols[i + 1])
            pairCount[Int(p)] += sign * wordFreq[w]
            if sign > 0 && pairValid[Int(p)] && pairWords[Int(p)].last != Int32(w) { pairWords[Int(p)].append(Int32(w)) }
            touched?.pointee.append(p)
        }
    }

    private mutating func countPairs(of w: Int, sign: Int, touched: inout [Int32]) {
        withUnsafeMutablePointer(to: &touched) { countPairs(of: w, sign: sign, touched: $0) }
    }

    // MARK: - Validity (SentencePiece's IsValidSentencePiece)

    func isValidPiece(_ s: [UInt32]) -> Bool {
        if s.isEmpty || s.count > options.maxSentencepieceLength { return false }
        let allWhitespace = s.allSatisfy { $0 == BPETrainer.wsChar }
        var previousScript: UInt16? = nil
        for (pos, c) in s.enumerated() {
            // A tab is ordinary text since sentencepiece 0.2.1 (0.2.0 refused it as its UPP boundary).
            if c == BPETrainer.unkChar || c == 0 || c == 0x20 { return false }
            if c == BPETrainer.wsChar {
                // "▁" only as a prefix, unless the whole piece is whitespace and that is allowed.
                if pos > 0 && !(options.allowWhitespaceOnlyPieces && allWhitespace) { return false }
                continue
            }
            if options.splitDigits && c >= 0x30 && c <= 0x39 && s.count > 1 { return false }
            var script = UnicodeScript.of(c)
            if script == UnicodeScript.inherited, let p = previousScript { script = p }  // combining marks
            if options.splitByUnicodeScript, let p = previousScript, p != script { return false }
            previousScript = script
        }
        return true
    }

    // MARK: - Heap: highest count, then fewer code points, then smaller bytes

    @inline(__always)
    private static func better(_ x: (count: Int, pair: Int32), _ y: (count: Int, pair: Int32), _ lengths: [Int32], _ bytes: [[UInt8]]) -> Bool {
        if x.count != y.count { return x.count > y.count }
        let lx = lengths[Int(x.pair)], ly = lengths[Int(y.pair)]
        if lx != ly { return lx < ly }
        return bytes[Int(x.pair)].lexicographicallyPrecedes(bytes[Int(y.pair)])
    }

    private mutating func push(_ p: Int32) {
        pairHeapCount[Int(p)] = pairCount[Int(p)]
        let (lengths, bytes) = (pairLength, pairBytes)
        heap.push((pairCount[Int(p)], p)) { Self.better($0, $1, lengths, bytes) }
    }

    /// The best live pair. Every entry's count is at least its pair's true count, so the first entry whose
    /// count is current is the best; the newest entry of a pair whose count fell is pushed again, corrected,
    /// and older entries are dropped.
    private mutating func popBest() -> Int32? {
        let (lengths, bytes) = (pairLength, pairBytes)
        while let top = heap.pop(by: { Self.better($0, $1, lengths, bytes) }) {
            let p = Int(top.pair)
            guard pairActive[p] && pairCount[p] > 0 else { continue }
            if pairCount[p] == top.count { return top.pair }
            if top.count == pairHeapCount[p] && pairCount[p] < top.count {
                pairHeapCount[p] = pairCount[p]
                heap.push((pairCount[p], top.pair)) { Self.better($0, $1, lengths, bytes) }
            }
        }
        return nil
    }
}
