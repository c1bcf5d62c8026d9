// PairMerger: the merge loop of BPE training, with exact pair counts.
//
// Words are arrays of symbol ids with a frequency. Each pair of adjacent symbols has a count, the words it
// occurs in, and whether its concatenation may become a piece (SentencePiece's IsValidSentencePiece). A
// max-heap with lazy invalidation picks the best pair; applying it rewrites only the words that hold it.

import Foundation

/// One thread's share of `candidates`.
private final class CandidateList: @unchecked Sendable {
    var words: [Int32] = []
}

/// Generic over the arena's symbol type: 16-bit when every symbol id fits (vocabularies under 65,535
/// pieces), which halves the memory the merge loop reads at random.
struct PairMerger<Symbol: FixedWidthInteger & UnsignedInteger & Sendable> {
    let options: BPETrainerOptions

    private var symbolScalars: [[UInt32]] = []
    private var symbolBytes: [[UInt8]] = []
    private var symbolIds: [[UInt32]: Int32] = [:]
    /// Every word's symbols end to end in one buffer; merges only shorten words, so each is edited in place.
    private var arena: [Symbol] = []
    /// Each word's place in the arena, 32-bit to keep this table small in cache (the merge loop reads it at
    /// random; a sample of 4e9 symbols would need --input-sentence-size).
    private var wordSpan: [(start: UInt32, length: UInt32)] = []
    private var wordFreq: [Int] = []

    private var pairIds = PairIdTable()
    private var pairCount: [Int] = []
    private var pairLeft: [Int32] = []
    private var pairRight: [Int32] = []
    private var pairValid: [Bool] = []
    private var pairActive: [Bool] = []
    private var pairBytes: [[UInt8]] = []
    private var pairWords: [[Int32]] = []
    private var pairLength: [Int32] = []  // code points of the merged piece
    private var pairSplit: [Int32] = []  // code points of its left part
    /// The count of the newest heap entry of each pair (the heap may hold older ones too).
    private var pairHeapCount: [Int] = []
    private var heap = BinaryHeap<(count: Int, pair: Int32)>()
    private var mergedAt: [Int] = []

    /// Threads that look for the words holding a merged pair in long lists (the rest of the loop is serial).
    let threads: Int

    init(options: BPETrainerOptions, threads: Int = 1) {
        self.options = options
        self.threads = max(1, threads)
    }

    /// The words of `list` that still hold the pair (a, b). A pair's list also names words that have lost it
    /// since, and reading each word is a cache miss, so long lists are filtered by several threads at once.
    private func candidates(
        of list: [Int32], _ a: Symbol, _ b: Symbol, in buffer: UnsafeMutableBufferPointer<Symbol>
    ) -> [Int32] {
        guard threads > 1 && list.count >= 8192 else { return list }
        nonisolated(unsafe) let base = UnsafePointer(buffer.baseAddress!)
        let (spans, threads) = (wordSpan, threads)
        let parts = (0..<threads).map { _ in CandidateList() }
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            var found: [Int32] = []
            for w in list[(t * list.count / threads)..<((t + 1) * list.count / threads)] {
                let p = base + Int(spans[Int(w)].start), n = Int(spans[Int(w)].length)
                var i = 0
                while i + 1 < n {
                    if p[i] == a && p[i + 1] == b {
                        found.append(w)
                        break
                    }
                    i += 1
                }
            }
            parts[t].words = found
        }
        return parts.flatMap(\.words)
    }

    /// Learns up to `wanted` merges; returns the new pieces' UTF-8 bytes in merge order.
    mutating func run(words: WordTable, wanted: Int) -> [[UInt8]] {
        // Words in table order: the order changes pair ids, never the result, since every tie between pairs
        // is broken by their content (see `better`).
        for w in 0..<words.count {
            let word = words.word(w), freq = words.counts[w]
            precondition(
                arena.count + word.count < Int(UInt32.max),
                "more than 4e9 symbols of training text; sample it with --input-sentence-size")
            wordSpan.append((UInt32(arena.count), UInt32(word.count)))
            for c in word { arena.append(Symbol(symbol([c]))) }
            wordFreq.append(freq)
        }
        for w in wordSpan.indices { countInitialPairs(of: w) }
        for p in pairCount.indices where pairValid[p] && pairCount[p] > 0 { push(Int32(p)) }
        var pairStamp = [Int32](repeating: -1, count: pairCount.count)

        var merges: [[UInt8]] = []
        var emitted = Set<[UInt8]>()
        var wordStamp = [Int32](repeating: -1, count: wordSpan.count)
        var touched: [Int32] = []
        while merges.count < wanted, let best = popBest() {
            pairActive[Int(best)] = false
            // A piece reached by two paths ("aa"+"a", "a"+"aa") is kept once; the second path is dropped.
            guard emitted.insert(pairBytes[Int(best)]).inserted else { continue }
            merges.append(pairBytes[Int(best)])
            let (a, b) = (Symbol(pairLeft[Int(best)]), Symbol(pairRight[Int(best)]))
            let merged = Symbol(symbol(symbolScalars[Int(a)] + symbolScalars[Int(b)]))
            touched.removeAll(keepingCapacity: true)
            var symbols = arena
            arena = []  // moved out, so the words can be edited through a pointer while self changes
            symbols.withUnsafeMutableBufferPointer { buffer in
                for w in candidates(of: pairWords[Int(best)], a, b, in: buffer)
                where wordStamp[Int(w)] != Int32(merges.count) {
                    wordStamp[Int(w)] = Int32(merges.count)
                    let span = wordSpan[Int(w)]
                    wordSpan[Int(w)].length = UInt32(
                        applyMerge(
                            a, b, into: merged, word: Int(w), symbols: buffer.baseAddress! + Int(span.start),
                            count: Int(span.length), touched: &touched))
                }
            }
            arena = symbols
            // Counts that rose need a fresh heap entry now; counts that fell are corrected when popped.
            if pairStamp.count < pairCount.count {
                pairStamp += [Int32](repeating: -1, count: pairCount.count - pairStamp.count)
            }
            for p in touched where pairStamp[Int(p)] != Int32(merges.count) {
                pairStamp[Int(p)] = Int32(merges.count)
                if pairActive[Int(p)] && pairValid[Int(p)] && pairCount[Int(p)] > pairHeapCount[Int(p)] { push(p) }
            }
        }
        return merges
    }

    /// Rewrites word w with every left-to-right occurrence of (a, b) merged, and updates the counts of only
    /// the pairs that changed: an old pair that touches an occurrence is gone, a new pair that touches a
    /// merged symbol appears, and every other pair maps one to one onto an equal pair of the new word. The
    /// counts equal a full recount (the vocabulary does not change); the work is per occurrence, not per word.
    private mutating func applyMerge(
        _ a: Symbol, _ b: Symbol, into merged: Symbol, word w: Int, symbols: UnsafeMutablePointer<Symbol>,
        count n: Int, touched: inout [Int32]
    ) -> Int {
        let freq = wordFreq[w]
        // Old pairs touching an occurrence, each once: pairs start at i − 1, i and i + 1.
        var occurrences = 0
        var lastRemoved = -1
        var i = 0
        while i + 1 < n {
            if symbols[i] == a && symbols[i + 1] == b {
                for j in stride(from: max(i - 1, lastRemoved + 1), through: min(i + 1, n - 2), by: 1) {
                    pairCount[Int(pair(Int32(symbols[j]), Int32(symbols[j + 1])))] -= freq
                }
                lastRemoved = min(i + 1, n - 2)
                occurrences += 1
                i += 2
            } else {
                i += 1
            }
        }
        guard occurrences > 0 else { return n }
        // Merge in place, remembering where merged symbols land.
        mergedAt.removeAll(keepingCapacity: true)
        var k = 0
        i = 0
        while i < n {
            if i + 1 < n && symbols[i] == a && symbols[i + 1] == b {
                symbols[k] = merged
                mergedAt.append(k)
                i += 2
            } else {
                symbols[k] = symbols[i]
                i += 1
            }
            k += 1
        }
        // New pairs touching a merged symbol, each once: pairs start at k − 1 and k.
        var lastAdded = -1
        for m in mergedAt {
            for j in stride(from: max(m - 1, lastAdded + 1), through: min(m, k - 2), by: 1) {
                let p = pair(Int32(symbols[j]), Int32(symbols[j + 1]))
                pairCount[Int(p)] += freq
                if pairValid[Int(p)] && pairWords[Int(p)].last != Int32(w) { pairWords[Int(p)].append(Int32(w)) }
                touched.append(p)
            }
            lastAdded = max(lastAdded, min(m, k - 2))
        }
        return k
    }

    // MARK: - Symbols and pairs

    private mutating func symbol(_ scalars: [UInt32]) -> Int32 {
        if let id = symbolIds[scalars] { return id }
        let id = Int32(symbolScalars.count)
        symbolScalars.append(scalars)
        symbolBytes.append(Array(String(String.UnicodeScalarView(scalars.compactMap(Unicode.Scalar.init))).utf8))
        symbolIds[scalars] = id
        return id
    }

    private mutating func pair(_ a: Int32, _ b: Int32) -> Int32 {
        let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
        if let id = pairIds.get(key) { return id }
        let id = Int32(pairCount.count)
        let (left, right) = (symbolScalars[Int(a)], symbolScalars[Int(b)])
        let valid = isValidPiece(left, right)
        pairIds.insert(key, id)
        pairCount.append(0)
        pairLeft.append(a)
        pairLength.append(Int32(left.count + right.count))
        pairSplit.append(Int32(left.count))
        pairHeapCount.append(0)
        pairRight.append(b)
        // Only candidates reach the heap, whose ties compare bytes.
        pairBytes.append(valid ? symbolBytes[Int(a)] + symbolBytes[Int(b)] : [])
        pairValid.append(valid)
        pairActive.append(true)
        pairWords.append([])
        return id
    }

    /// Counts word w's adjacent pairs, weighted by its frequency.
    private mutating func countInitialPairs(of w: Int) {
        let start = Int(wordSpan[w].start), length = Int(wordSpan[w].length)
        guard length > 1 else { return }
        for i in start..<(start + length - 1) {
            let p = pair(Int32(arena[i]), Int32(arena[i + 1]))
            pairCount[Int(p)] += wordFreq[w]
            if pairValid[Int(p)] && pairWords[Int(p)].last != Int32(w) { pairWords[Int(p)].append(Int32(w)) }
        }
    }

    // MARK: - Validity (SentencePiece's IsValidSentencePiece)

    /// Whether the concatenation of `a` and `b` may be a piece (without building it).
    func isValidPiece(_ a: [UInt32], _ b: [UInt32]) -> Bool {
        let n = a.count + b.count
        if n == 0 || n > options.maxSentencepieceLength { return false }
        let allWhitespace = a.allSatisfy { $0 == BPETrainer.wsChar } && b.allSatisfy { $0 == BPETrainer.wsChar }
        var previousScript: UInt16? = nil
        for pos in 0..<n {
            let c = pos < a.count ? a[pos] : b[pos - a.count]
            // A tab is ordinary text since sentencepiece 0.2.1 (0.2.0 refused it as its UPP boundary).
            if c == BPETrainer.unkChar || c == 0 || c == 0x20 { return false }
            if c == BPETrainer.wsChar {
                // "▁" only as a prefix, unless the whole piece is whitespace and that is allowed.
                if pos > 0 && !(options.allowWhitespaceOnlyPieces && allWhitespace) { return false }
                continue
            }
            if options.splitDigits && c >= 0x30 && c <= 0x39 && n > 1 { return false }
            var script = UnicodeScript.of(c)
            if script == UnicodeScript.inherited, let p = previousScript { script = p }  // combining marks
            if options.splitByUnicodeScript, let p = previousScript, p != script { return false }
            previousScript = script
        }
        return true
    }

    // MARK: - Heap: highest count, then fewer code points, then smaller bytes, then the shorter left part
    // (the same piece reached as "a"+"aa" and "aa"+"a"): a total order on pairs, so the merges never depend
    // on the order in which words or pairs were first seen.

    @inline(__always)
    private static func better(
        _ x: (count: Int, pair: Int32), _ y: (count: Int, pair: Int32), _ lengths: [Int32], _ bytes: [[UInt8]],
        _ splits: [Int32]
    ) -> Bool {
        if x.count != y.count { return x.count > y.count }
        let lx = lengths[Int(x.pair)], ly = lengths[Int(y.pair)]
        if lx != ly { return lx < ly }
        let bx = bytes[Int(x.pair)], by = bytes[Int(y.pair)]
        if bx != by { return bx.lexicographicallyPrecedes(by) }
        return splits[Int(x.pair)] < splits[Int(y.pair)]
    }

    private mutating func push(_ p: Int32) {
        pairHeapCount[Int(p)] = pairCount[Int(p)]
        let (lengths, bytes, splits) = (pairLength, pairBytes, pairSplit)
        heap.push((pairCount[Int(p)], p)) { Self.better($0, $1, lengths, bytes, splits) }
    }

    /// The best live pair. Every entry's count is at least its pair's true count, so the first entry whose
    /// count is current is the best; the newest entry of a pair whose count fell is pushed again, corrected,
    /// and older entries are dropped.
    private mutating func popBest() -> Int32? {
        let (lengths, bytes, splits) = (pairLength, pairBytes, pairSplit)
        while let top = heap.pop(by: { Self.better($0, $1, lengths, bytes, splits) }) {
            let p = Int(top.pair)
            guard pairActive[p] && pairCount[p] > 0 else { continue }
            if pairCount[p] == top.count { return top.pair }
            if top.count == pairHeapCount[p] && pairCount[p] < top.count {
                pairHeapCount[p] = pairCount[p]
                heap.push((pairCount[p], top.pair)) { Self.better($0, $1, lengths, bytes, splits) }
            }
        }
        return nil
    }
}
