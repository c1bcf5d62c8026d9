// Where a rank's part of global batch k comes from: prepared token shards (MixtureLoader) or synthetic
// tokens. Either way the batch is a function of (seed, k) and the rank's slice, never of the world size.
import Dataset
import Foundation
import Model
import Support

public protocol BatchSource {
    /// Rank `rank`'s sequences of global batch k (globalBatch sequences over worldSize ranks): row-major
    /// (sequences × seqLen) inputs and next-token targets, ignoreIndex where no loss is taken.
    func batch(_ k: Int, globalBatch: Int, rank: Int, worldSize: Int) throws -> (tokens: [Int32], targets: [Int32])
    /// Where the data stands after `sequences` global sequences (epochs per source), for the log; nil if
    /// there is nothing to say (synthetic tokens).
    func position(afterSequences sequences: Int) -> String?
}

extension BatchSource {
    public func position(afterSequences sequences: Int) -> String? { nil }
}

extension MixtureLoader: BatchSource {
    public func position(afterSequences sequences: Int) -> String? {
        let epochs = epochs(afterSequences: sequences)
        return "epochs so far: "
            + sources.sorted { $0.name < $1.name }.map {
                String(format: "%@ %.2f (of %lld windows)", $0.name, epochs[$0.name] ?? 0, Int64($0.windows))
            }.joined(separator: ", ")
    }
}

/// Pseudo-random tokens for benchmarks and tests: sequence g of the run is drawn from its own generator.
/// `ignoreFraction` of the targets (also drawn per position) are the ignore index, so masked averaging can
/// be tested with different counts on every micro-step and rank.
public struct SyntheticTokens: BatchSource {
    public let vocabSize: Int
    public let seqLen: Int
    public let seed: UInt64
    public let ignoreFraction: Double

    public init(vocabSize: Int, seqLen: Int, seed: UInt64, ignoreFraction: Double = 0) {
        self.vocabSize = vocabSize
        self.seqLen = seqLen
        self.seed = seed
        self.ignoreFraction = ignoreFraction
    }

    public func batch(
        _ k: Int, globalBatch: Int, rank: Int, worldSize: Int
    ) throws -> (tokens: [Int32], targets: [Int32]) {
        let perRank = globalBatch / worldSize
        var tokens: [Int32] = [], targets: [Int32] = []
        tokens.reserveCapacity(perRank * seqLen)
        targets.reserveCapacity(perRank * seqLen)
        for i in 0..<perRank {
            let g = UInt64(k * globalBatch + rank * perRank + i)
            var rng = SplitMix64(seed: seed ^ (g &* 0x9E37_79B9_7F4A_7C15))
            let stream = (0...seqLen).map { _ in Int32(rng.next() % UInt64(vocabSize)) }
            tokens += stream[0..<seqLen]
            for t in 1...seqLen {
                targets.append(rng.nextUnit() < ignoreFraction ? LlamaModel.ignoreIndex : stream[t])
            }
        }
        return (tokens, targets)
    }
}
