// The validation loss: mean next-token cross-entropy over a fixed set of windows that training never reads
// (train.eval_data's shards, or the tail that train.eval_holdout keeps out of each source), the same windows
// every time so that two evaluations differ only by the model. Its work is spread over the ranks: the windows
// are cut into micro-batches in order, batch b runs on rank b mod N, and one allreduce sums the losses. The
// batches do not depend on N, so neither does the loss (beyond the order of one sum in double).
// `llama-train eval` runs the same code on a saved model, which is how the two are compared.
import Dataset
import Distributed
import Foundation
import Model
import Support

public struct ValidationSet {
    public let loader: MixtureLoader
    public let windows: [(source: Int, window: Int)]
    /// Where the windows come from, for the log.
    public let description: String

    public init(loader: MixtureLoader, windows: [(source: Int, window: Int)], description: String) {
        (self.loader, self.windows, self.description) = (loader, windows, description)
    }

    /// Every window of a prepared directory (at most `limit`, spread evenly).
    public static func directory(
        _ directory: String, tokenizerHash: String, seqLen: Int, vocabSize: Int, limit: Int
    ) throws -> ValidationSet {
        let loader = try MixtureLoader(
            directory: directory, tokenizerHash: tokenizerHash, seqLen: seqLen, seed: 0, vocabSize: vocabSize)
        let windows = loader.evaluationWindows(heldOut: false, limit: limit)
        return ValidationSet(
            loader: loader, windows: windows,
            description:
                "\(windows.count) of the \(loader.sources.reduce(0) { $0 + $1.windows }) windows of \(directory)")
    }

    /// The windows a training loader holds out (train.eval_holdout), at most `limit`.
    public static func heldOut(by loader: MixtureLoader, limit: Int) -> ValidationSet {
        let windows = loader.evaluationWindows(heldOut: true, limit: limit)
        return ValidationSet(
            loader: loader, windows: windows,
            description: "\(windows.count) of the \(loader.sources.reduce(0) { $0 + $1.heldOut }) held-out windows")
    }
}

public struct ValidationResult: Sendable {
    public var lossSum: Double
    public var tokens: Int
    public var seconds: Double
    public var loss: Double { lossSum / Double(max(tokens, 1)) }
    public var perplexity: Double { exp(loss) }
}

public enum ValidationLoss {
    /// The model's mean loss over `set`, on every rank. Every rank must call it: a rank without a batch in
    /// the last round runs one whose targets are all ignored, since a model sharded by units gathers its
    /// weights collectively.
    public static func run(
        model: LlamaModel, set: ValidationSet, microBatch: Int, world: Communicator
    ) throws -> ValidationResult {
        let start = monotonicSeconds()
        let T = set.loader.seqLen, B = max(1, microBatch)
        let batches = (set.windows.count + B - 1) / B
        let rounds = (batches + world.size - 1) / world.size
        var sums = [0.0, 0.0]
        for round in 0..<rounds {
            let b = round * world.size + world.rank
            var tokens = [Int32](repeating: 0, count: B * T)
            var targets = [Int32](repeating: LlamaModel.ignoreIndex, count: B * T)
            if b < batches {
                for (row, i) in ((b * B)..<min((b + 1) * B, set.windows.count)).enumerated() {
                    let (s, w) = set.windows[i]
                    let window = try set.loader.tokens(source: s, window: w)
                    for t in 0..<T {
                        tokens[row * T + t] = window[t]
                        targets[row * T + t] = window[t + 1]
                    }
                }
            }
            let r = try model.forward(tokens: tokens, targets: targets, batch: B, seqLen: T)
            sums[0] += r.lossSum
            sums[1] += Double(r.targetCount)
        }
        try sums.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: 2) }
        return ValidationResult(lossSum: sums[0], tokens: Int(sums[1]), seconds: monotonicSeconds() - start)
    }
}
