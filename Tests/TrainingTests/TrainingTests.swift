// The training loop's arithmetic in one process: the schedule against its formula and loss normalisation
// over micro-steps with different masks.

import Configuration
import Distributed
import Foundation
import Model
import Support
import TestSupport
import Testing
import Training

@Suite struct ScheduleTests {
    /// Written from the definition, independently of CosineSchedule's code path.
    func expected(_ s: Int, peak: Double, warmup: Int, total: Int, ratio: Double) -> Double {
        if s < warmup { return peak * Double(s + 1) / Double(warmup) }
        if s >= total - 1 { return ratio * peak }
        let t = Double(s - warmup) / Double(total - 1 - warmup)
        return ratio * peak + (peak - ratio * peak) * (1 + cos(.pi * t)) / 2
    }

    @Test func warmupThenCosineToTheFloor() {
        let schedule = CosineSchedule(peak: 3e-4, warmupSteps: 2000, totalSteps: 10_000, minRatio: 0.1)
        let checks: [(Int, String)] = [
            (0, "first step"), (999, "mid warm-up"), (1999, "end of warm-up"), (2000, "first decay step"),
            (6000, "mid decay"), (9999, "last step"), (10_000, "after"), (50_000, "long after"),
        ]
        for (s, what) in checks {
            let lr = schedule.learningRate(step: s)
            #expect(abs(lr - expected(s, peak: 3e-4, warmup: 2000, total: 10_000, ratio: 0.1)) < 1e-15, "\(what)")
        }
        func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) < 1e-15 }
        #expect(close(schedule.learningRate(step: 1999), 3e-4) && close(schedule.learningRate(step: 2000), 3e-4))
        #expect(abs(schedule.learningRate(step: 5999) - (3e-5 + 1.35e-4)) < 1e-7, "halfway down the cosine")
        #expect(close(schedule.learningRate(step: 9999), 3e-5) && close(schedule.learningRate(step: 12_345), 3e-5))
        #expect(
            (1..<9999).allSatisfy { s in
                s < 2000 || schedule.learningRate(step: s) <= schedule.learningRate(step: s - 1)
            })
    }
}

@Suite struct LossNormalisationTests {
    static func config(microBatch: Int, ignore: Double) -> RunConfig {
        var t = TrainSettings()
        (t.seqLen, t.microBatch, t.globalBatchTokens, t.steps, t.learningRate, t.warmupSteps) = (
            16, microBatch, 16 * 8, 3, 1e-3, 1
        )
        t.syntheticIgnoreFraction = ignore
        t.seed = 5
        return RunConfig(
            model: LlamaConfig(
                dim: 32, nLayers: 2, nHeads: 4, nKVHeads: 2, vocabSize: 64, ffnHiddenSize: 48,
                maxSeqLen: 16), train: t)
    }

    /// Micro-steps holding different numbers of ignored targets average like one batch computed at once:
    /// the divisor is the step's count of targets that count, not the number of micro-steps.
    @Test func microStepsWithDifferentMasksEqualOneBatch() throws {
        let world = try Communicator.world()
        var quiet = TrainOptions()
        quiet.log = { _ in }
        let whole = try Trainer(config: Self.config(microBatch: 8, ignore: 0.4), world: world, options: quiet)
        let split = try Trainer(config: Self.config(microBatch: 1, ignore: 0.4), world: world, options: quiet)
        #expect(split.accumulation == 8 && whole.accumulation == 1)
        let a = try whole.run().history, b = try split.run().history
        #expect(a.count == b.count && maxDifference(a.map(\.loss), b.map(\.loss)) < 1e-5)
        for (x, y) in zip(a, b) { #expect(abs(x.gradNorm - y.gradNorm) < 1e-5 * x.gradNorm) }
        let diff = maxDifference(whole.model.parameters.array, split.model.parameters.array)
        #expect(diff < 1e-6, "parameters after 3 steps differ by \(diff)")
    }
}
