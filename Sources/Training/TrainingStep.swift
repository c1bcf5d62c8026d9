// One optimizer step k:
//  1. Take this rank's slice of global batch k; count the targets that count, and sum the count over ranks.
//  2. For each micro-step: forward, then backward with loss scale 1 / (global count), gradients adding up.
//     On the last micro-step backward hands finished gradient buckets to the allreduce thread as it goes.
//  3. Wait for the last buckets (the exposed communication), sum the loss over ranks.
//  4. A NaN or Inf loss or gradient norm stops the run (or skips the step); otherwise clip to the global
//     norm and take an AdamW step at the scheduled learning rate. Every rank computes the same update.
import Foundation
import Optim

extension Trainer {
    func step(_ k: Int) throws -> StepMetrics {
        let t = config.train
        let stepStart = Date()
        // The loss is normalised by the step's global count of what counts (targets, or pairs).
        let localCount = try objective.load(step: k, rank: world.rank, worldSize: world.size)
        let globalCount = try world.allreduceSum(localCount)
        let scale = Float(globalCount > 0 ? 1 / globalCount : 0)

        model.gradients.zero()
        var lossSum = 0.0
        for m in 0..<accumulation {
            if m == accumulation - 1 {
                buckets.begin()
                lossSum += try objective.microStep(m, model: model, scale: scale) { [buckets] watermark in buckets.ready(from: watermark) }
            } else {
                lossSum += try objective.microStep(m, model: model, scale: scale, gradientsReady: nil)
            }
        }
        let computeEnd = Date()
        let exposed = try buckets.finish()
        var loss = try world.allreduceSum(lossSum) / max(globalCount, 1)
        // Fault injection for the tests: a NaN loss at this step (a valid config cannot be made to diverge
        // on demand now that the learning rate is bounded).
        if ProcessInfo.processInfo.environment["LLAMA_TRAIN_TEST_NAN_AT_STEP"] == "\(k + 1)" { loss = .nan }
        let optimizerStart = Date()
        let norm = GradientClipping.sumOfSquares(model.gradients).squareRoot()
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
            GradientClipping.scale(model.gradients, norm: norm, maxNorm: t.gradClip)
            optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: Float(lr))
        }
        return try reporter.report(step: k, loss: loss, lr: lr, gradNorm: norm, stepStart: stepStart, computeEnd: computeEnd,
                                   optimizerStart: optimizerStart, exposedComm: exposed, comm: buckets.communicationSeconds,
                                   skipped: skipped)
    }
}
