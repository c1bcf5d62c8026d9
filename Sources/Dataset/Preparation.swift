// Data preparation as a stream: each rank reads its parts of the inputs (DocumentReader), tokenises each
// document as it comes, and writes its own shards (ShardSink); rank 0 then writes index.json from the parts'
// metadata alone. Memory is bounded by one read buffer, one document part and one shard's staging, never by
// the corpus.
//
// Work is split so that the token stream of every source, read in index order, is the same for any number
// of ranks: an uncompressed JSON Lines or delimited input is cut into one byte range per rank (range r to
// rank r); an input that cannot be cut (compressed, or one document per file) goes whole to the rank with
// the least work so far. The index lists a source's inputs in command-line order and each input's ranges
// in file order, so only the shard boundaries depend on the rank count.
import Foundation
import Support
import Tokenizer

/// Writes one stream of documents as shards of at most `shardTokens` tokens, named PREFIX-NNNNN.bin; a
/// document stays whole within a shard where it fits (a longer one fills shards in turn).
public final class ShardSink {
    let directory: String
    let prefix: String
    let vocabSize: Int
    let tokenizerHash: String
    let shardTokens: Int
    private var current: TokenShardWriter?
    private var currentDocuments = 0
    public private(set) var shards: [DatasetIndex.Shard] = []
    public private(set) var tokens = 0

    public init(directory: String, prefix: String, vocabSize: Int, tokenizerHash: String, shardTokens: Int) {
        self.directory = directory
        self.prefix = prefix
        self.vocabSize = vocabSize
        self.tokenizerHash = tokenizerHash
        self.shardTokens = shardTokens
    }

    /// Appends a document's tokens, or the next part of one.
    public func add(_ ids: [Int32], startsDocument: Bool) throws {
        if let shard = current, shard.count > 0, shard.count + ids.count > shardTokens { try commitCurrent() }
        if current == nil {
            let file = String(format: "%@-%05d.bin", prefix, shards.count)
            current = try TokenShardWriter(
                path: directory + "/" + file, vocabSize: vocabSize, tokenizerHash: tokenizerHash)
        }
        try current!.append(ids)
        tokens += ids.count
        if startsDocument { currentDocuments += 1 }
    }

    private func commitCurrent() throws {
        guard let shard = current else { return }
        shards.append(try shard.commit(documents: currentDocuments))
        current = nil
        currentDocuments = 0
    }

    /// Commits the last shard; returns every shard written, in order.
    public func finish() throws -> [DatasetIndex.Shard] {
        try commitCurrent()
        return shards
    }
}

/// What one rank made of one part of one input: the metadata rank 0 builds the index from.
public struct PreparedPart: Codable, Equatable {
    public var input: Int
    public var part: Int
    public var shards: [DatasetIndex.Shard]
    public var documents: Int
    public var tokens: Int
    public var badLines: Int
    public var warnings: [String]
}

public enum Preparation {
    /// One unit of work: part `part` of `parts` of input `input`, done by `rank`.
    public struct Assignment: Equatable, Sendable {
        public var input: Int
        public var part: Int
        public var parts: Int
        public var rank: Int
    }

    /// Who reads what: splittable inputs in one range per rank, the others whole, largest first, each to the
    /// rank with the fewest bytes so far (ties to the lowest rank). A pure function of its arguments, so
    /// every rank computes the same plan.
    public static func plan(sizes: [Int], splittable: [Bool], ranks: Int) -> [Assignment] {
        var load = [Int](repeating: 0, count: ranks)
        var work: [Assignment] = []
        for i in sizes.indices where splittable[i] {
            for r in 0..<ranks {
                work.append(Assignment(input: i, part: r, parts: ranks, rank: r))
                load[r] += sizes[i] / ranks
            }
        }
        let whole = sizes.indices.filter { !splittable[$0] }.sorted {
            sizes[$0] != sizes[$1] ? sizes[$0] > sizes[$1] : $0 < $1
        }
        for i in whole {
            let r = load.indices.min { load[$0] != load[$1] ? load[$0] < load[$1] : $0 < $1 }!
            work.append(Assignment(input: i, part: 0, parts: 1, rank: r))
            load[r] += sizes[i]
        }
        return work.sorted { ($0.input, $0.part) < ($1.input, $1.part) }
    }

    /// Tokenises one assignment into shards in `directory`. Documents get BOS and EOS; a long plain-text
    /// document is encoded part by part when the tokenizer allows it (`encodesPartsAtNewlines`), else whole.
    public static func run(
        _ work: Assignment, input: InputSpec, options: DocumentOptions, tokenizer: Tokenizer,
        tokenizerHash: String, shardTokens: Int, directory: String
    ) throws -> PreparedPart {
        let reader = try DocumentReader(path: input.path, options: options, part: work.part, of: work.parts)
        let prefix = String(format: "%@-%03d-%04d", input.source, work.input, work.part)
        let sink = ShardSink(
            directory: directory, prefix: prefix, vocabSize: tokenizer.vocabSize,
            tokenizerHash: tokenizerHash, shardTokens: shardTokens)
        let byParts = tokenizer.encodesPartsAtNewlines
        var held = ""
        while let part = try reader.next() {
            if byParts {
                try sink.add(
                    tokenizer.encodePart(part.text, first: part.first, last: part.last), startsDocument: part.first)
            } else {
                held += part.text
                if part.last {
                    try sink.add(tokenizer.encode(held, bos: true, eos: true), startsDocument: true)
                    held = ""
                }
            }
        }
        return PreparedPart(
            input: work.input, part: work.part, shards: try sink.finish(), documents: reader.documents,
            tokens: sink.tokens, badLines: reader.badLines, warnings: reader.warnings)
    }

    /// The index of a prepared directory from every rank's parts: sources in order of first appearance,
    /// each source's inputs in command-line order, each input's parts in file order. An input that gave no
    /// document is refused, by name.
    public static func index(
        parts: [PreparedPart], inputs: [InputSpec], vocabSize: Int, tokenizerHash: String
    ) throws -> DatasetIndex {
        var byInput: [Int: [PreparedPart]] = [:]
        for p in parts { byInput[p.input, default: []].append(p) }
        for (i, input) in inputs.enumerated() where (byInput[i] ?? []).reduce(0, { $0 + $1.documents }) == 0 {
            throw DatasetError.emptyInput(file: input.path)
        }
        var order: [String] = []
        for input in inputs where !order.contains(input.source) { order.append(input.source) }
        let sources = order.map { name in
            let members = inputs.indices.filter { inputs[$0].source == name }
            return DatasetIndex.Source(
                name: name, inputs: members.map { inputs[$0].path },
                shards: members.flatMap { i in (byInput[i] ?? []).sorted { $0.part < $1.part }.flatMap(\.shards) })
        }
        return DatasetIndex(tokenizerSHA256: tokenizerHash, vocabSize: vocabSize, sources: sources)
    }

    /// Writes index.json, last, so a directory with an index is complete.
    public static func write(_ index: DatasetIndex, to directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(index), to: directory + "/index.json")
    }
}

public enum ShardWriter {
    /// Writes already tokenised documents of each source as shards, then index.json (tests and tools; the
    /// `prepare` command streams through `Preparation`).
    public static func write(
        sources: [(name: String, inputs: [String], documents: [[Int32]])], vocabSize: Int,
        tokenizerHash: String, shardTokens: Int, to directory: String
    ) throws -> DatasetIndex {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var index = DatasetIndex(tokenizerSHA256: tokenizerHash, vocabSize: vocabSize, sources: [])
        for source in sources {
            let sink = ShardSink(
                directory: directory, prefix: source.name, vocabSize: vocabSize, tokenizerHash: tokenizerHash,
                shardTokens: shardTokens)
            for document in source.documents { try sink.add(document, startsDocument: true) }
            index.sources.append(.init(name: source.name, inputs: source.inputs, shards: try sink.finish()))
        }
        try Preparation.write(index, to: directory)
        return index
    }
}
