// The whole model's backward against finite differences, on shapes the fixture does not cover:
// one key/value head for three query heads, a head dimension that is not dim / heads, ignored targets.
import Model
import TestSupport
import Testing

@Suite struct ModelGradientTests {
    static let config = LlamaConfig(
        dim: 12, nLayers: 2, nHeads: 3, nKVHeads: 1, vocabSize: 17, ffnHiddenSize: 20,
        headDim: 6, normEps: 1e-5, ropeTheta: 500, maxSeqLen: 8)

    @Test func backwardMatchesFiniteDifferences() throws {
        let model = try LlamaModel(config: Self.config)
        model.initialize(seed: 3, std: 0.3)
        var r = Rand(9)
        let (B, T) = (2, 5)
        let tokens = (0..<(B * T)).map { _ in Int32(r.next() % 17) }
        var targets = (0..<(B * T)).map { _ in Int32(r.next() % 17) }
        targets[0] = LlamaModel.ignoreIndex
        targets[6] = LlamaModel.ignoreIndex

        model.gradients.zero()
        let result = try model.forward(tokens: tokens, targets: targets, batch: B, seqLen: T)
        #expect(result.targetCount == B * T - 2)
        try model.backward(lossScale: 1 / Float(result.targetCount))

        for spec in model.layout.tensors {
            // Probe at most 24 coordinates per tensor, spread over it.
            expectTensorGradient(
                spec.name, values: model.parameters.slice(spec.offset, spec.count),
                gradient: UnsafeBufferPointer(model.gradients.slice(spec.offset, spec.count)), probes: 24
            ) {
                (try? model.forward(tokens: tokens, targets: targets, batch: B, seqLen: T).meanLoss) ?? .nan
            }
        }
    }

    @Test func gradientsAccumulateAcrossBackwardCalls() throws {
        let model = try LlamaModel(config: Self.config)
        model.initialize(seed: 4, std: 0.3)
        let tokens: [Int32] = [1, 2, 3, 4], targets: [Int32] = [2, 3, 4, 5]
        model.gradients.zero()
        _ = try model.forward(tokens: tokens, targets: targets, batch: 1, seqLen: 4)
        try model.backward(lossScale: 1)
        let once = model.gradients.array
        _ = try model.forward(tokens: tokens, targets: targets, batch: 1, seqLen: 4)
        try model.backward(lossScale: 1)
        let twice = model.gradients.array
        #expect(maxDifference(twice, once.map { 2 * $0 }) <= 1e-6 * (once.map { abs($0) }.max() ?? 1))
    }
}

@Suite struct GradientReadinessTests {
    /// What backward reports as final (every offset ≥ the watermark) never changes afterwards, the
    /// watermarks only go down, and they end at 0: the contract the overlapped allreduce relies on.
    @Test func reportedGradientsAreFinal() throws {
        let model = try LlamaModel(config: ModelGradientTests.config)
        model.initialize(seed: 8, std: 0.3)
        let tokens: [Int32] = [1, 5, 2, 9, 3, 3], targets: [Int32] = [5, 2, 9, 3, 3, 7]
        model.gradients.zero()
        _ = try model.forward(tokens: tokens, targets: targets, batch: 1, seqLen: 6)
        var snapshots: [(Int, [Float])] = []
        try model.backward(lossScale: 0.5) { w in snapshots.append((w, Array(model.gradients.array[w...]))) }
        let final = model.gradients.array
        #expect(snapshots.map(\.0) == snapshots.map(\.0).sorted(by: >) && snapshots.last?.0 == 0)
        #expect(snapshots.count == ModelGradientTests.config.nLayers + 2)
        for (w, values) in snapshots {
            #expect(values == Array(final[w...]), "gradients above \(w) changed after being reported")
        }
    }
}

@Suite struct RecomputeTests {
    /// Recomputing each block in backward runs the same kernels in the same order, so the gradients equal
    /// those of keeping every activation bit for bit; an inference model computes the same logits with a
    /// smaller arena and no gradient buffer.
    @Test func recomputeGivesBitwiseTheSameGradients() throws {
        let config = LlamaConfig(
            dim: 32, nLayers: 3, nHeads: 4, nKVHeads: 2, vocabSize: 50, ffnHiddenSize: 48, maxSeqLen: 80)
        var r = Rand(17)
        let (B, T) = (2, 70)  // several attention tiles per row
        let tokens = (0..<(B * T)).map { _ in Int32(r.next() % 50) },
            targets = (0..<(B * T)).map { _ in Int32(r.next() % 50) }
        func run(_ purpose: ModelPurpose) throws -> (logits: [Float], gradients: [Float], arena: Int) {
            let model = try LlamaModel(config: config, purpose: purpose)
            model.initialize(seed: 4, std: 0.2)
            let result = try model.forward(tokens: tokens, targets: targets, batch: B, seqLen: T)
            let logits = Array(model.logits), arena = model.activations!.byteCount
            guard purpose.trains else { return (logits, [], arena) }
            try model.backward(lossScale: 1 / Float(result.targetCount))
            return (logits, model.gradients.array, arena)
        }
        let none = try run(.training(.none)), layer = try run(.training(.layer)), inference = try run(.inference)
        #expect(none.gradients == layer.gradients && none.logits == layer.logits && !none.gradients.isEmpty)
        #expect(inference.logits == none.logits)
        #expect(
            layer.arena < none.arena && inference.arena < layer.arena,
            "arenas: \(none.arena), \(layer.arena), \(inference.arena)")
        #expect(try LlamaModel(config: config, purpose: .inference).gradients.count == 0)
    }
}
