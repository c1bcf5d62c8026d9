// The training loop's arithmetic in one process: the schedule against its formula and loss normalisation
// over micro-steps with different masks.

import Configuration
import Distributed
import Foundation
import Model
import Support
import TestSupport
import Testing

@testable import Training

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

/// The clocks that decide saves and stops, on an injected clock (one rank: the agreement is the rank's vote).
@Suite struct RunClockTests {
    final class FakeTime: @unchecked Sendable {
        var now = Date(timeIntervalSince1970: 1_000_000)
    }

    @Test func checkpointsByWallClockAreDueOnlyAtAStepsEndAndCountFromTheLastSave() throws {
        let world = try Communicator.world()
        let time = FakeTime()
        let clock = RunClock(
            checkpointEveryMinutes: 0.5, signalLead: 0, environment: [:], isRoot: true, now: { time.now })
        let quiet = PreemptionSignal()
        time.now += 29
        #expect(try clock.agree(world, stepEnd: true, signal: quiet) == (nil, false))
        time.now += 2
        #expect(try clock.agree(world, stepEnd: false, signal: quiet) == (nil, false), "a micro-step boundary")
        #expect(try clock.agree(world, stepEnd: true, signal: quiet) == (nil, true), "31 s after the start")
        clock.saveStarted()
        time.now += 20
        #expect(try clock.agree(world, stepEnd: true, signal: quiet) == (nil, false), "20 s after the save")
        time.now += 10
        #expect(try clock.agree(world, stepEnd: true, signal: quiet) == (nil, true), "30 s after the save")
        let off = RunClock(checkpointEveryMinutes: 0, signalLead: 0, environment: [:], isRoot: true, now: { time.now })
        time.now += 1e6
        #expect(try off.agree(world, stepEnd: true, signal: quiet) == (nil, false), "0 minutes: never")
    }

    @Test func aSignalStopsAtTheNextBoundaryAndATimeLimitBeforeItWouldOverrun() throws {
        let world = try Communicator.world()
        let time = FakeTime()
        let signal = PreemptionSignal()
        let clock = RunClock(
            checkpointEveryMinutes: 0, signalLead: 0, environment: [:], isRoot: true, now: { time.now })
        #expect(try clock.agree(world, stepEnd: false, signal: signal).stop == nil)
        signal.receive(SIGUSR1)
        #expect(try clock.agree(world, stepEnd: false, signal: signal).stop == "preempted (SIGUSR1)")

        // The job ends at t0 + 100 s; a micro-step takes 10 s and a save 6 s: carrying on is safe while more than
        // 1.25 · (10 + 16) + 5 = 37.5 s are left.
        let end = time.now.timeIntervalSince1970 + 100
        let limited = RunClock(
            checkpointEveryMinutes: 0, signalLead: 0, environment: ["SLURM_JOB_END_TIME": "\(Int(end))"],
            isRoot: true, now: { time.now })
        var lines: [String] = []
        limited.recordMicroSteps([8, 10, 9], log: { lines.append($0) })
        limited.recordSave(seconds: 6, log: { lines.append($0) })
        let quiet = PreemptionSignal()
        time.now += 62
        #expect(try limited.agree(world, stepEnd: false, signal: quiet).stop == nil, "38 s left")
        time.now += 1
        let reason = try limited.agree(world, stepEnd: false, signal: quiet).stop
        #expect(reason?.contains("time limit is 37 s away") == true, "\(reason ?? "nil")")
        #expect(lines.contains { $0.contains("a micro-step takes 10.00 s") }, "\(lines)")
        #expect(lines.contains { $0.contains("a signal is honoured within 16.00 s") }, "\(lines)")
        #expect(!lines.contains { $0.contains("warning") }, "no lead given, no warning: \(lines)")
    }

    @Test func aSignalLeadShorterThanAMicroStepAndASaveIsWarnedOnce() {
        var lines: [String] = []
        let clock = RunClock(checkpointEveryMinutes: 0, signalLead: 120, environment: [:], isRoot: true)
        clock.recordMicroSteps([90], log: { lines.append($0) })
        #expect(!lines.contains { $0.contains("warning") }, "1.25 × 90 s fit in 120: \(lines)")
        clock.recordSave(seconds: 30, log: { lines.append($0) })
        clock.recordSave(seconds: 30, log: { lines.append($0) })
        let warnings = lines.filter { $0.contains("warning: --signal-lead 120 s cannot cover") }
        #expect(warnings.count == 1 && warnings[0].contains("120.00 s") && warnings[0].contains("USR1@150"), "\(lines)")
    }

    /// The margin's micro-step is the longest stretch between two boundaries of a step (the step's tail
    /// included), not counting a save.
    @Test func theMarginIsTheLongestStretchBetweenBoundaries() throws {
        let world = try Communicator.world()
        let time = FakeTime()
        let clock = RunClock(
            checkpointEveryMinutes: 0, signalLead: 0, environment: [:], isRoot: true, now: { time.now })
        let quiet = PreemptionSignal()
        _ = try clock.agree(world, stepEnd: false, signal: quiet)  // start-up
        for gap in [3.0, 4, 7] {  // micro-steps 1 and 2, then the last with the reduction and optimizer
            time.now += gap
            _ = try clock.agree(world, stepEnd: gap == 7, signal: quiet)
        }
        #expect(clock.microStepSeconds == 7)
        time.now += 50  // a save
        clock.saveReturned()
        time.now += 2
        _ = try clock.agree(world, stepEnd: true, signal: quiet)
        #expect(clock.microStepSeconds == 2, "the save is not a stretch between boundaries")
    }
}
