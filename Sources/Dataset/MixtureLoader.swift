// MixtureLoader: which token windows make up global batch k, as a pure function of (seed, k).
//
// Each source's token stream (its shards end to end) is cut into windows of seq_len + 1 tokens, stride
// seq_len. A source's share of sequences is proportional to tokens × weight (a weight of 2 sees the source
// twice per epoch of the rest; 0.5 half). Shares are laid out as a fixed, seeded pattern of `period` slots,
// so the n-th draw of each source is known in O(1) for any sequence index; each source walks a seeded
// permutation of its windows, a new one per epoch, computed one window at a time (FeistelPermutation), so
// memory and start-up time do not grow with the corpus and every index is 64-bit. Nothing depends on the
// number of ranks: rank r of R takes sequences [r·G/R, (r+1)·G/R) of each global batch of G. The loader's
// whole state is the batch index.
import Foundation
import Support

public final class MixtureLoader {
    public struct SourceInfo {
        public let name: String
        public let tokens: Int
        /// Windows training draws from: the source's windows but those held out.
        public let windows: Int
        /// Windows at the end of the stream kept out of training, for validation (train.eval_holdout).
        public let heldOut: Int
        public let weight: Double
        /// Fraction of sequences drawn from this source.
        public let share: Double
    }

    public let seqLen: Int
    public let seed: UInt64
    public let sources: [SourceInfo]
    public let period: Int
    /// The model's vocabulary: ids at or past it are refused, at start-up from index.json's largest ids, or as
    /// they are read from a shard whose index entry records none.
    public let vocabSize: Int
    private let entries: [[ShardEntry]]
    private let shardStarts: [[Int]]
    private let open: ShardCache
    private let pattern: [Int]  // slot → source
    private let slotsBefore: [[Int]]  // slotsBefore[s][i]: slots of source s in pattern[0..<i]

    /// Opens a prepared directory for a run whose tokenizer hash is `tokenizerHash` and whose model has
    /// `vocabSize` rows: a token id outside it is refused now where index.json records the shard's largest id,
    /// else when it is read, naming the shard. At most `maxOpenShards` shards are mapped at once. `holdout`:
    /// the fraction of each source's windows, at the end of its stream, that training never draws.
    public init(
        directory: String, tokenizerHash: String, seqLen: Int, weights: [String: Double] = [:],
        seed: UInt64, vocabSize: Int = Int(Int32.max), period: Int = 4096, maxOpenShards: Int = 64,
        holdout: Double = 0
    ) throws {
        let index = try DatasetIndex.load(directory: directory)
        guard index.tokenizerSHA256 == tokenizerHash else {
            throw DatasetError.tokenizerMismatch(
                file: directory + "/index.json", expected: tokenizerHash, actual: index.tokenizerSHA256)
        }
        if let unknown = weights.keys.sorted().first(where: { name in !index.sources.contains { $0.name == name } }) {
            throw DatasetError.invalid(
                "mixture weight for '\(unknown)', but \(directory) has sources \(index.sources.map(\.name))")
        }
        self.seqLen = seqLen
        self.seed = seed
        self.vocabSize = vocabSize
        // Start-up reads index.json only: a corpus of 70,000 shards on 1,000 ranks would otherwise be 70 million
        // opens of a shared file system, and as many mappings per process as Linux allows (vm.max_map_count).
        // A shard is opened, and its header checked against the index, when a window first needs it.
        var entries: [[ShardEntry]] = [], starts: [[Int]] = [], infos: [(String, Int, Int, Int, Double)] = []
        for source in index.sources {
            var listed: [ShardEntry] = [], offsets: [Int] = [], total = 0
            for s in source.shards {
                let path = directory + "/" + s.file
                if let maxId = s.maxTokenId, maxId >= vocabSize {
                    throw DatasetError.badShard(
                        file: path,
                        reason:
                            "holds token id \(maxId) (index.json), outside the model's vocabulary of \(vocabSize); was it prepared with another tokenizer, or is model.vocab_size too small?"
                    )
                }
                offsets.append(total)
                let (sum, overflow) = total.addingReportingOverflow(s.tokens)
                guard !overflow else {
                    throw DatasetError.badShard(
                        file: directory + "/index.json", reason: "source '\(source.name)' counts more than 2^63 tokens")
                }
                total = sum
                listed.append(ShardEntry(path: path, tokens: s.tokens, checked: s.maxTokenId != nil))
            }
            let weight = weights[source.name] ?? 1
            guard weight >= 0 else { throw DatasetError.invalid("mixture weight of '\(source.name)' is negative") }
            let all = max(0, (total - 1) / seqLen)
            let held = holdout > 0 ? Int((holdout * Double(all)).rounded(.up)) : 0
            let windows = all - held
            if weight > 0 && windows <= 0 {
                throw DatasetError.invalid(
                    "source '\(source.name)' has \(total) tokens, "
                        + (held > 0
                            ? "\(all) window(s) of seq_len + 1 = \(seqLen + 1), all of them held out (\(held)) by a holdout of \(holdout): lower train.eval_holdout"
                            : "fewer than one window of seq_len + 1 = \(seqLen + 1)"))
            }
            entries.append(listed)
            starts.append(offsets)
            infos.append((source.name, total, windows, held, weight))
        }
        let mass = infos.map { Double($0.1) * $0.4 }
        let totalMass = mass.reduce(0, +)
        guard totalMass > 0 else { throw DatasetError.invalid("\(directory): every source has weight 0 or no tokens") }
        self.entries = entries
        shardStarts = starts
        open = ShardCache(capacity: maxOpenShards, tokenizerHash: tokenizerHash)
        let sources = zip(infos, mass).map {
            SourceInfo(name: $0.0, tokens: $0.1, windows: $0.2, heldOut: $0.3, weight: $0.4, share: $1 / totalMass)
        }
        self.sources = sources

        // Largest-remainder apportionment of `period` slots; every source with weight gets at least one.
        let active = sources.indices.filter { sources[$0].share > 0 }
        let p = max(period, active.count)
        var counts = sources.map { Int(($0.share * Double(p)).rounded(.down)) }
        for s in active where counts[s] == 0 { counts[s] = 1 }
        let byRemainder = active.sorted {
            let a = sources[$0].share * Double(p) - Double(counts[$0]),
                b = sources[$1].share * Double(p) - Double(counts[$1])
            return a != b ? a > b : $0 < $1
        }
        var i = 0
        while counts.reduce(0, +) < p {
            counts[byRemainder[i % byRemainder.count]] += 1
            i += 1
        }
        while counts.reduce(0, +) > p, let s = active.max(by: { counts[$0] < counts[$1] }) { counts[s] -= 1 }
        var slots = counts.enumerated().flatMap { [Int](repeating: $0.offset, count: $0.element) }
        var rng = SplitMix64(seed: seed ^ 0x6d69_7874_7572_6521)
        for j in stride(from: slots.count - 1, to: 0, by: -1) { slots.swapAt(j, Int(rng.next() % UInt64(j + 1))) }
        pattern = slots
        self.period = p
        var before = [[Int]](repeating: [Int](repeating: 0, count: p + 1), count: sources.count)
        for (j, s) in slots.enumerated() {
            for t in sources.indices { before[t][j + 1] = before[t][j] + (t == s ? 1 : 0) }
        }
        slotsBefore = before
    }

    /// Draws of source s among sequences 0..<g.
    public func draws(source s: Int, before g: Int) -> Int {
        (g / period) * slotsBefore[s][period] + slotsBefore[s][g % period]
    }

    /// Passes over each source's windows after the first `sequences` sequences.
    public func epochs(afterSequences sequences: Int) -> [String: Double] {
        Dictionary(
            uniqueKeysWithValues: sources.indices.map {
                (
                    sources[$0].name,
                    sources[$0].windows > 0
                        ? Double(draws(source: $0, before: sequences)) / Double(sources[$0].windows) : 0
                )
            })
    }

    /// (source, window) of global sequence g.
    public func window(ofSequence g: Int) -> (source: Int, window: Int) {
        let s = pattern[g % period]
        let n = draws(source: s, before: g)
        let windows = sources[s].windows
        let epoch = n / windows
        let order = FeistelPermutation(
            count: windows, seed: seed &+ UInt64(s) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(epoch) &* 0xC2B2_AE3D_27D4_EB4F)
        return (s, order[n % windows])
    }

    /// The windows a validation loss reads, the same every time: the held-out windows of every source (or, with
    /// `heldOut` false, every window), at most `limit` of them spread evenly over that list, sources in the
    /// index's order.
    public func evaluationWindows(heldOut: Bool, limit: Int) -> [(source: Int, window: Int)] {
        let all = sources.indices.flatMap { s in
            let range =
                heldOut ? sources[s].windows..<(sources[s].windows + sources[s].heldOut) : 0..<sources[s].windows
            return range.map { (source: s, window: $0) }
        }
        guard all.count > limit, limit > 0 else { return all }
        return (0..<limit).map { all[$0 * all.count / limit] }
    }

    /// Window w of source s: seq_len + 1 tokens.
    public func tokens(source s: Int, window w: Int) throws -> [Int32] {
        var window = [Int32](repeating: 0, count: seqLen + 1)
        try window.withUnsafeMutableBufferPointer {
            try read(source: s, start: w * seqLen, count: seqLen + 1, into: $0.baseAddress!)
        }
        return window
    }

    /// Rank `rank`'s part of global batch k of `globalBatch` sequences: inputs and next-token targets,
    /// row-major (sequences × seq_len).
    public func batch(
        _ k: Int, globalBatch: Int, rank: Int = 0, worldSize: Int = 1
    ) throws -> (tokens: [Int32], targets: [Int32]) {
        guard globalBatch % worldSize == 0 else {
            throw DatasetError.invalid(
                "global batch of \(globalBatch) sequences does not split over \(worldSize) ranks")
        }
        let perRank = globalBatch / worldSize
        var tokens = [Int32](repeating: 0, count: perRank * seqLen), targets = tokens
        var window = [Int32](repeating: 0, count: seqLen + 1)
        for i in 0..<perRank {
            let (s, w) = self.window(ofSequence: k * globalBatch + rank * perRank + i)
            try window.withUnsafeMutableBufferPointer {
                try read(source: s, start: w * seqLen, count: seqLen + 1, into: $0.baseAddress!)
            }
            for t in 0..<seqLen {
                tokens[i * seqLen + t] = window[t]
                targets[i * seqLen + t] = window[t + 1]
            }
        }
        return (tokens, targets)
    }

    /// Tokens [start, start + count) of source s's stream, across shard boundaries.
    private func read(source s: Int, start: Int, count: Int, into out: UnsafeMutablePointer<Int32>) throws {
        var position = start, done = 0
        var i = Self.lastShard(startingAtOrBefore: position, in: shardStarts[s])
        while done < count {
            let entry = entries[s][i]
            let offset = position - shardStarts[s][i]
            let n = min(count - done, entry.tokens - offset)
            if n > 0 {
                try open.shard(entry).read(start: offset, count: n, into: out + done)
                if !entry.checked, let bad = (0..<n).first(where: { out[done + $0] >= vocabSize || out[done + $0] < 0 })
                {
                    throw DatasetError.badShard(
                        file: entry.path,
                        reason:
                            "token \(offset + bad) has id \(out[done + bad]), outside the model's vocabulary of \(vocabSize); was it prepared with another tokenizer, or is model.vocab_size too small? (index.json records no largest id for this shard, so ids are checked as they are read)"
                    )
                }
            }
            done += max(n, 0)
            position += max(n, 0)
            i += 1
        }
    }

    /// Binary search: a 2T-token corpus has tens of thousands of shards per source.
    static func lastShard(startingAtOrBefore position: Int, in starts: [Int]) -> Int {
        var low = 0, high = starts.count  // answer in [low, high)
        while high - low > 1 {
            let mid = (low + high) / 2
            if starts[mid] <= position { low = mid } else { high = mid }
        }
        return low
    }
}

/// A shard as index.json lists it: where it is, its token count, and whether its largest id was checked
/// against the vocabulary at start-up (recorded in the index) or must be as its tokens are read.
struct ShardEntry {
    let path: String
    let tokens: Int
    let checked: Bool
}

/// The shards a loader has mapped: at most `capacity`, the least recently used unmapped first. Opening one
/// checks its header against index.json (token count, tokenizer hash), so a bad shard is named when a window
/// first reaches it.
final class ShardCache {
    let capacity: Int
    let tokenizerHash: String
    private var shards: [String: (shard: TokenShard, used: Int)] = [:]
    private var clock = 0

    init(capacity: Int, tokenizerHash: String) {
        (self.capacity, self.tokenizerHash) = (max(1, capacity), tokenizerHash)
    }

    /// Shards mapped now.
    var count: Int { shards.count }

    func shard(_ entry: ShardEntry) throws -> TokenShard {
        clock += 1
        if let held = shards[entry.path] {
            shards[entry.path] = (held.shard, clock)
            return held.shard
        }
        let shard = try TokenShard(path: entry.path)
        guard shard.tokenizerHash == tokenizerHash else {
            throw DatasetError.tokenizerMismatch(file: shard.path, expected: tokenizerHash, actual: shard.tokenizerHash)
        }
        guard shard.tokenCount == entry.tokens else {
            throw DatasetError.badShard(
                file: shard.path, reason: "holds \(shard.tokenCount) tokens, index.json says \(entry.tokens)")
        }
        // A linear scan for the oldest: capacity is tens, and opening a shard costs more than the scan.
        if shards.count >= capacity, let oldest = shards.min(by: { $0.value.used < $1.value.used })?.key {
            shards.removeValue(forKey: oldest)
        }
        shards[entry.path] = (shard, clock)
        return shard
    }
}
