// Token shards, documents and the mixture loader: round trips, refusals that name the file, and the loader's
// promises (a pure function of (seed, k), independent of the world size; weights realised; epochs complete).
import Dataset
import Foundation
import Support
import Testing

func scratchDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "llama-train-dataset-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

let hashA = String(repeating: "ab", count: 32), hashB = String(repeating: "cd", count: 32)

/// A prepared directory with sources of the given sizes whose token at stream position i is i mod 60000,
/// so a window's content tells where it came from.
func makeDataset(_ sizes: [String: [Int]], vocab: Int = 60000) throws -> String {
    let dir = try scratchDirectory()
    var next = 0
    let sources = sizes.keys.sorted().map { name in
        (
            name: name, inputs: ["\(name).txt"],
            documents: sizes[name]!.map { n -> [Int32] in
                defer { next += n }
                return (0..<n).map { Int32((next + $0) % vocab) }
            }
        )
    }
    _ = try ShardWriter.write(sources: sources, vocabSize: vocab, tokenizerHash: hashA, shardTokens: 700, to: dir)
    return dir
}

@Suite struct ShardTests {
    @Test(arguments: [1000, 70000])
    func roundTripPicksTheTokenWidth(vocab: Int) throws {
        let dir = try scratchDirectory()
        let tokens: [Int32] = (0..<500).map { Int32(($0 * 7919) % vocab) }
        try TokenShard.write(tokens: tokens, documents: 3, vocabSize: vocab, tokenizerHash: hashA, to: dir + "/s.bin")
        let shard = try TokenShard(path: dir + "/s.bin")
        #expect(shard.tokens() == tokens && shard.documentCount == 3 && shard.tokenizerHash == hashA)
        let size = try FileManager.default.attributesOfItem(atPath: dir + "/s.bin")[.size] as! Int
        #expect(size == 64 + 500 * (vocab <= 65536 ? 2 : 4))
    }

    @Test func truncatedShardIsRefused() throws {
        let dir = try scratchDirectory()
        try TokenShard.write(tokens: [1, 2, 3], documents: 1, vocabSize: 100, tokenizerHash: hashA, to: dir + "/s.bin")
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/s.bin"))
        try data.prefix(data.count - 1).write(to: URL(fileURLWithPath: dir + "/s.bin"))
        #expect { try TokenShard(path: dir + "/s.bin") } throws: { error in
            guard case let .badShard(file, _) = error as? DatasetError else { return false }
            return file == dir + "/s.bin"
        }
    }

    @Test func anotherTokenizerIsRefused() throws {
        let dir = try makeDataset(["a": [3000]])
        #expect { try MixtureLoader(directory: dir, tokenizerHash: hashB, seqLen: 16, seed: 1) } throws: { error in
            guard case .tokenizerMismatch = error as? DatasetError else { return false }
            return "\(error)".contains("prepare")
        }
    }
}

@Suite struct DocumentTests {
    @Test func delimiterSplitsFortuneFiles() throws {
        let dir = try scratchDirectory()
        try "one\nline\n%\ntwo\n%\n%\nthree".write(toFile: dir + "/f", atomically: true, encoding: .utf8)
        #expect(try Documents.read(dir + "/f", delimiter: "%") == ["one\nline", "two", "three"])
        #expect(try Documents.read(dir + "/f", delimiter: nil).count == 1)
    }

    @Test func jsonLinesAndTheirErrorsNameFileAndLine() throws {
        let dir = try scratchDirectory()
        try "{\"text\": \"a\"}\n{\"text\": \"b\"}\n".write(toFile: dir + "/d.jsonl", atomically: true, encoding: .utf8)
        #expect(try Documents.read(dir + "/d.jsonl", delimiter: nil) == ["a", "b"])
        try "{\"text\": \"a\"}\nnot json\n".write(toFile: dir + "/bad.jsonl", atomically: true, encoding: .utf8)
        #expect { try Documents.read(dir + "/bad.jsonl", delimiter: nil) } throws: { "\($0)".contains("bad.jsonl:2") }
    }

    @Test func emptyAndMissingInputsNameTheFile() throws {
        let dir = try scratchDirectory()
        try "\n%\n\n".write(toFile: dir + "/empty", atomically: true, encoding: .utf8)
        #expect(throws: DatasetError.emptyInput(file: dir + "/empty")) {
            try Documents.read(dir + "/empty", delimiter: "%")
        }
        #expect { try Documents.read(dir + "/missing", delimiter: nil) } throws: { "\($0)".contains(dir + "/missing") }
    }

    @Test func sourceNamesComeFromTheArgument() {
        #expect(InputSpec(argument: "wiki=/data/w.jsonl").source == "wiki")
        #expect(InputSpec(argument: "wiki=/data/w.jsonl").path == "/data/w.jsonl")
        #expect(InputSpec(argument: "/data/a=b/c.txt").path == "/data/a=b/c.txt")
        #expect(InputSpec(argument: "/data/books.txt").source == "books")
    }
}

@Suite struct LoaderTests {
    @Test func batchesDependOnSeedAndIndexNotOnRanks() throws {
        let dir = try makeDataset(["a": [900, 1300, 2000], "b": [5000]])
        let loader = try MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 32, seed: 7)
        for k in [0, 1, 17] {
            let whole = try loader.batch(k, globalBatch: 12)
            let again = try MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 32, seed: 7).batch(
                k, globalBatch: 12)
            #expect(whole.tokens == again.tokens)
            for world in [2, 3] {
                let parts = try (0..<world).map { try loader.batch(k, globalBatch: 12, rank: $0, worldSize: world) }
                #expect(
                    parts.flatMap(\.tokens) == whole.tokens && parts.flatMap(\.targets) == whole.targets,
                    "world \(world), batch \(k)")
            }
            // Targets are the next tokens of the same stream.
            #expect(
                zip(whole.tokens.dropFirst(), whole.targets).enumerated().allSatisfy {
                    $0.offset % 32 == 31 || $0.element.0 == $0.element.1
                })
        }
        #expect(
            try loader.batch(0, globalBatch: 12).tokens
                != MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 32, seed: 8).batch(0, globalBatch: 12)
                .tokens)
        #expect(throws: DatasetError.self) { try loader.batch(0, globalBatch: 12, rank: 0, worldSize: 5) }
    }

    /// Opening reads index.json alone: a shard is opened when a window first reaches it, and a bad one is named
    /// then; with at most 2 mapped at a time (the rest closed and opened again) every batch is the same. An
    /// index naming one file twice is refused at once.
    @Test func shardsAreOpenedOnDemandAndBadOnesNamedWhenReached() throws {
        let dir = try makeDataset(["a": [900, 1300, 2000, 700, 1100]])
        let index = try DatasetIndex.load(directory: dir)
        let files = index.sources[0].shards.map(\.file)
        try #require(files.count >= 4)
        let many = try MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 32, seed: 7)
        let two = try MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 32, seed: 7, maxOpenShards: 2)
        for k in 0..<6 { #expect(try two.batch(k, globalBatch: 40).tokens == many.batch(k, globalBatch: 40).tokens) }
        try FileManager.default.removeItem(atPath: dir + "/" + files[2])
        let missing = try MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 32, seed: 7)
        #expect { try (0..<20).forEach { _ = try missing.batch($0, globalBatch: 40) } } throws: { error in
            "\(error)".contains(files[2])
        }
        var twice = index
        twice.sources[0].shards.append(twice.sources[0].shards[0])
        try Preparation.write(twice, to: dir)
        #expect { try DatasetIndex.load(directory: dir) } throws: { "\($0)".contains("listed twice") }
    }

    /// Shares follow tokens × weight to within one slot of the pattern (1/period) over whole periods, and
    /// within 1% over an arbitrary run of batches.
    @Test func mixtureWeightsAreRealised() throws {
        let dir = try makeDataset(["a": [4000], "b": [4000], "c": [2000]])
        let loader = try MixtureLoader(
            directory: dir, tokenizerHash: hashA, seqLen: 16, weights: ["a": 2, "c": 0.5], seed: 3, period: 1000)
        let expected = ["a": 8000.0 / 13000, "b": 4000.0 / 13000, "c": 1000.0 / 13000]
        var counts: [Int: Int] = [:]
        let n = 50_000
        for g in 0..<n { counts[loader.window(ofSequence: g).source, default: 0] += 1 }
        for (s, info) in loader.sources.enumerated() {
            #expect(abs(info.share - expected[info.name]!) < 1e-12)
            #expect(abs(Double(counts[s]!) / Double(n) - expected[info.name]!) < 0.01, "\(info.name)")
        }
        #expect(throws: DatasetError.self) {
            try MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 16, weights: ["z": 1], seed: 3)
        }
    }

    /// Each epoch of a source visits every one of its windows exactly once, in a new order.
    @Test func epochsCoverEveryWindowOnce() throws {
        let dir = try makeDataset(["a": [1000], "b": [3001]])
        let loader = try MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 50, seed: 11)
        let b = loader.sources.firstIndex { $0.name == "b" }!
        var seen: [[Int]] = [[], []]
        var g = 0
        while seen[1].count < loader.sources[b].windows {
            let (s, w) = loader.window(ofSequence: g)
            if s == b { seen[seen[0].count < loader.sources[b].windows ? 0 : 1].append(w) }
            g += 1
        }
        #expect(seen[0].sorted() == Array(0..<loader.sources[b].windows))
        #expect(seen[1].sorted() == Array(0..<loader.sources[b].windows) && seen[0] != seen[1])
        #expect(abs(loader.epochs(afterSequences: g)["b"]! - 2) < 1e-9)
    }
}
