// One optimizer step k:
//  1. Take this rank's slice of global batch k; count the targets that count, and sum the count over ranks.
//  2. For each micro-step: forward, then backward with loss scale 1 / (global count), gradients adding up.
//     Sharding none: on the last micro-step backward hands finished gradient buckets to the allreduce
//     thread as it goes. Sharding gradients and full: every unit's gradients are reduce-scattered right
//     after its backward (ShardedUnits). Sharding optimizer: the whole gradient buffer is reduce-scattered
//     after the last micro-step.
//     Before every micro-step but the first the ranks agree whether to stop (a preemption signal, the job's
//     time limit: RunClock); if so the partial step is dropped: nothing it computed has touched the
//     parameters or the optimizer, and the data position is still the step's start.
//  3. Wait for the last of it (the exposed communication), sum the loss over ranks.
//  4. A NaN or Inf loss or gradient norm stops the run (or skips the step); otherwise each trained model is
//     clipped to its own global norm (under sharding: each rank's sum of squares of its own range, one
//     scalar allreduce) and takes an AdamW step on the range this rank updates; under optimizer and
//     gradients sharding its parameters are then allgathered. Every rank computes the same update of the
//     same values. A stage's other trained models reduce their gradients after the micro-steps (only the
//     primary's allreduce overlaps backward); frozen models only compute.
//  5. When due (--eval-every, and the last step), the validation loss of the updated model, on every rank.
import Distributed
import Foundation
import Support

extension Trainer {
    /// Step k, or nil when the ranks agreed at a micro-step boundary to stop (`stopReason` says why).
    func step(_ k: Int) throws -> StepMetrics? {
        let t = config.train
        let stepStart = Date()
        let trained = models.filter(\.trains)
        // The loss is normalised by the step's global count of what counts (targets, or pairs).
        let localCount = try objective.load(step: k, rank: world.rank, worldSize: world.size)
        let globalCount = try world.allreduceSum(localCount)
        let scale = Float(globalCount > 0 ? 1 / globalCount : 0)

        for m in models { m.beginStep() }
        // The primary's allreduce overlaps its last backward on a thread of its own; another model's gathers
        // or reduce-scatters on `world` during that micro-step would then be a second thread in MPI on one
        // communicator, so with such a model the primary reduces after the micro-steps like the others.
        let primaryBuckets = models.dropFirst().allSatisfy { $0.units == nil } ? models[0].buckets : nil
        var lossSum = 0.0
        for m in 0..<accumulation {
            if m > 0, let reason = try clock.agree(world, stepEnd: false, log: options.log).stop {
                for model in models { model.abandonStep() }
                stopReason = "\(reason), during step \(k + 1) (\(m) of its \(accumulation) micro-steps done, dropped)"
                return nil
            }
            if m == accumulation - 1, let buckets = primaryBuckets {
                buckets.begin()
                lossSum += try objective.microStep(m, models: modelSet, scale: scale) { watermark in
                    buckets.ready(from: watermark)
                }
            } else {
                lossSum += try objective.microStep(m, models: modelSet, scale: scale, gradientsReady: nil)
            }
            for model in models { try model.units?.checkFailure() }
        }
        let computeEnd = Date()
        var (exposed, communication) = (0.0, 0.0)
        for (i, m) in models.enumerated() {
            let (e, c) = try m.finishReduction(world: world, overlapped: i == 0 && primaryBuckets != nil)
            (exposed, communication) = (exposed + e, communication + c)
        }
        var loss = try world.allreduceSum(lossSum) / max(globalCount, 1)
        // The tests' seam: a NaN loss at this step (a valid config cannot be made to diverge on demand now
        // that the learning rate is bounded).
        if let injected = FaultInjection.lossAtStep?(k + 1) { loss = injected }
        let optimizerStart = Date()
        // Each trained model's own norm; the primary's is the one reported.
        let norms = try trained.map { try $0.gradientNorm(world: world, threads: options.threads) }
        let norm = norms[0]
        let lr = schedule.learningRate(step: k)
        var skipped = false
        if !loss.isFinite || !norms.allSatisfy(\.isFinite) {
            let what =
                "step \(k + 1): loss \(loss), gradient norm \(trained.count == 1 ? "\(norm)" : "\(zip(trained, norms).map { "\($0.spec.name) \($1)" })")"
            guard t.onNonFinite == .skip else {
                throw TrainingError(
                    "non-finite \(what); parameters were not updated. Lower train.lr, or set train.on_nonfinite to \"skip\""
                )
            }
            skipped = true
            if world.isRoot { options.log("skipping \(what)") }
        } else {
            for (m, n) in zip(trained, norms) {
                let seconds = try m.update(
                    norm: n, learningRate: lr * m.spec.learningRateRatio, world: world, threads: options.threads)
                (exposed, communication) = (exposed + seconds, communication + seconds)
            }
        }
        let optimizerEnd = Date()
        // The model after this step, on the validation windows, when due (its time is kept out of the step's).
        var validated: ValidationResult?
        if let validation, (options.evalEvery > 0 && (k + 1) % options.evalEvery == 0) || k + 1 == t.steps {
            validated = try ValidationLoss.run(model: model, set: validation, microBatch: t.microBatch, world: world)
        }
        return try reporter.report(
            step: k, loss: loss, lr: lr, gradNorm: norm, stepStart: stepStart, computeEnd: computeEnd,
            optimizerStart: optimizerStart, optimizerEnd: optimizerEnd, exposedComm: exposed, comm: communication,
            skipped: skipped, validation: validated)
    }
}
