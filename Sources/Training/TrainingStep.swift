// One optimizer step k:
//  1. Take this rank's slice of global batch k; count the targets that count, and sum the count over ranks.
//  2. For each micro-step: forward, then backward with loss scale 1 / (global count), gradients adding up.
//     Sharding none: on the last micro-step backward hands finished gradient buckets to the allreduce
//     thread as it goes. Sharding gradients and full: every unit's gradients are reduce-scattered right
//     after its backward (ShardedUnits). Sharding optimizer: the whole gradient buffer is reduce-scattered
//     after the last micro-step.
//  3. Wait for the last of it (the exposed communication), sum the loss over ranks.
//  4. A NaN or Inf loss or gradient norm stops the run (or skips the step); otherwise clip to the global
//     norm (under sharding: each rank's sum of squares of its own range, one scalar allreduce) and take an
//     AdamW step on the range this rank updates; under optimizer and gradients sharding the parameters are
//     then allgathered. Every rank computes the same update of the same values.
import Distributed
import Foundation
import Kernels
import Optim

extension Trainer {
    /// LLAMA_TRAIN_TEST_NAN_AT_STEP, read once rather than every step.
    private static let nanStep = ProcessInfo.processInfo.environment["LLAMA_TRAIN_TEST_NAN_AT_STEP"].flatMap { Int($0) }

    func step(_ k: Int) throws -> StepMetrics {
        let t = config.train
        let stepStart = Date()
        // The loss is normalised by the step's global count of what counts (targets, or pairs).
        let localCount = try objective.load(step: k, rank: world.rank, worldSize: world.size)
        let globalCount = try world.allreduceSum(localCount)
        let scale = Float(globalCount > 0 ? 1 / globalCount : 0)

        model.gradients.zero()
        units?.beginStep()
        var lossSum = 0.0
        for m in 0..<accumulation {
            if m == accumulation - 1, let buckets {
                buckets.begin()
                lossSum += try objective.microStep(m, model: model, scale: scale) { watermark in buckets.ready(from: watermark) }
            } else {
                lossSum += try objective.microStep(m, model: model, scale: scale, gradientsReady: nil)
            }
            try units?.checkFailure()
        }
        let computeEnd = Date()
        var (exposed, communication) = (0.0, 0.0)
        if let buckets {
            exposed = try buckets.finish()
            communication = buckets.communicationSeconds
        } else if let units {
            (exposed, communication) = (units.exposedSeconds, units.communicationSeconds)
        } else if let ownedGradients {
            let start = monotonicSeconds()
            try world.reduceScatterPieces(model.gradients.pointer, ownedGradients.pointer, range: 0..<model.layout.count, partition: partition)
            exposed = monotonicSeconds() - start
            communication = exposed
        }
        var loss = try world.allreduceSum(lossSum) / max(globalCount, 1)
        // Fault injection for the tests: a NaN loss at this step (a valid config cannot be made to diverge
        // on demand now that the learning rate is bounded).
        if k + 1 == Self.nanStep { loss = .nan }
        let optimizerStart = Date()
        // The gradients this rank updates with: all of them, or the sum of its own range.
        let gradients = ownedGradients?.pointer ?? model.gradients.pointer
        let squares = GradientClipping.sumOfSquares(gradients, count: owned.count, threads: options.threads)
        let norm = (t.sharding == .none ? squares : try world.allreduceSum(squares)).squareRoot()
        let lr = schedule.learningRate(step: k)
        var skipped = false
        if !loss.isFinite || !norm.isFinite {
            let what = "step \(k + 1): loss \(loss), gradient norm \(norm)"
            guard t.onNonFinite == .skip else {
                throw TrainingError("non-finite \(what); parameters were not updated. Lower train.lr, or set train.on_nonfinite to \"skip\"")
            }
            skipped = true
            if world.isRoot { options.log("skipping \(what)") }
        } else {
            GradientClipping.scale(gradients, count: owned.count, norm: norm, maxNorm: t.gradClip, threads: options.threads)
            let parameters = model.parameters.pointer + (owned.lowerBound - model.parameterRange.lowerBound)
            optimizer.update(parameters: parameters, gradients: gradients, learningRate: Float(lr))
            switch t.sharding {
            case .optimizer, .gradients:
                let start = monotonicSeconds()
                try world.allgatherPieces(model.parameters.pointer, range: 0..<model.layout.count, partition: partition)
                let seconds = monotonicSeconds() - start
                (exposed, communication) = (exposed + seconds, communication + seconds)
            case .full: units?.invalidate()
            case .none: break
            }
        }
        return try reporter.report(step: k, loss: loss, lr: lr, gradNorm: norm, stepStart: stepStart, computeEnd: computeEnd,
                                   optimizerStart: optimizerStart, exposedComm: exposed, comm: communication,
                                   skipped: skipped)
    }
}
