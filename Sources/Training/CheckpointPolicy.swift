// When a run saves and when it stops: every --checkpoint-every steps, every --checkpoint-every-minutes by rank
// 0's clock, at the schedule's end, at --stop-after, and on preemption (PreemptionSignal.swift: SIGTERM, or
// SIGUSR1 which Slurm sends with --signal=USR1@120) or when the job's time limit (SLURM_JOB_END_TIME) is too
// near for another micro-step and a save. A signal is read at every micro-step boundary: a 7B step on 64
// ranks takes 23 minutes, far beyond any scheduler's lead, so the ranks drop the partial step and commit the
// last completed one instead of finishing it.
//
// The ranks decide together in one allreduce of their largest vote (RunClock.agree): a signal reaches one
// rank or all, in any order, and only rank 0's clock counts, so every rank takes the same branch.
import Distributed
import Foundation

struct CheckpointPolicy {
    enum Decision: Equatable {
        case continueTraining
        case save
        /// Save, wait for the commit, and end the run early with `reason`.
        case saveAndStop(reason: String)
    }

    let every: Int
    let stopAfter: Int?
    let steps: Int

    /// What to do after step k (1-based) has been taken; `stop` names a preemption all ranks agreed on, and
    /// `due` says rank 0's clock asks for a checkpoint.
    func decision(afterStep k: Int, stop: String?, due: Bool = false) -> Decision {
        // A stop asked for after the last step is the end of the schedule: the final save, and --out, as usual.
        if let stop, k < steps { return .saveAndStop(reason: stop) }
        if let stop = stopAfter, k >= stop, k < steps {
            return .saveAndStop(reason: "stopped after step \(k) as asked")
        }
        if k == steps || (every > 0 && k % every == 0) || due { return .save }
        return .continueTraining
    }
}

/// The run's clocks: how long a micro-step and a save take, when the last save was, when the job ends. Rank 0's
/// readings decide what is due; the others only vote their signals.
final class RunClock {
    /// What a rank asks for at a boundary; the ranks take the largest.
    enum Vote: Int {
        case carryOn = 0
        case checkpointDue = 1
        case stop = 2
    }

    let checkpointInterval: TimeInterval?
    let signalLead: TimeInterval?
    /// The job's end (SLURM_JOB_END_TIME, seconds since 1970), when the scheduler says it.
    let jobEnd: Date?
    let isRoot: Bool
    let now: () -> Date
    private(set) var lastSave: Date
    /// The longest stretch between two boundaries in the latest step (a micro-step; the last one with the
    /// step's reduction and optimizer), and the latest save's commit.
    private(set) var microStepSeconds: Double?
    private(set) var saveSeconds: Double?
    private var lastBoundary: Date?
    private var longestGap = 0.0
    private var warned = false

    init(
        checkpointEveryMinutes: Double, signalLead: Double, environment: [String: String], isRoot: Bool,
        now: @escaping () -> Date = Date.init
    ) {
        checkpointInterval = checkpointEveryMinutes > 0 ? checkpointEveryMinutes * 60 : nil
        self.signalLead = signalLead > 0 ? signalLead : nil
        jobEnd = environment["SLURM_JOB_END_TIME"].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) }
        self.isRoot = isRoot
        self.now = now
        lastSave = now()
    }

    /// What the margin needs: a micro-step to reach the boundary, then a save.
    var margin: Double { (microStepSeconds ?? 0) + (saveSeconds ?? 0) }

    /// Why this rank asks to stop now, if it does: a signal, or (rank 0) a time limit the next micro-step and
    /// a save would overrun.
    func stopReason(signal: PreemptionSignal) -> String? {
        if signal.received { return "preempted (\(signal.name))" }
        guard isRoot, let jobEnd, let micro = microStepSeconds else { return nil }
        let left = jobEnd.timeIntervalSince(now())
        // Carrying on means one more micro-step before the next boundary, then the lead a stop needs; 5 s spare.
        guard left < 1.25 * micro + leadNeeded + 5 else { return nil }
        return String(format: "the job's time limit is %.0f s away (SLURM_JOB_END_TIME)", max(left, 0))
    }

    /// Every rank's vote, agreed: nil to carry on, or why the ranks stop; `due` when rank 0's clock asks for
    /// a checkpoint (only at a step's end).
    func agree(
        _ world: Communicator, stepEnd: Bool, signal: PreemptionSignal = .shared, log: (String) -> Void = { _ in }
    ) throws -> (stop: String?, due: Bool) {
        let time = now()
        if let last = lastBoundary { longestGap = max(longestGap, time.timeIntervalSince(last)) }
        lastBoundary = time
        if stepEnd && longestGap > 0 {
            recordMicroSteps([longestGap], log: log)
            longestGap = 0
        }
        let reason = stopReason(signal: signal)
        let due = stepEnd && isRoot && checkpointInterval.map { now().timeIntervalSince(lastSave) >= $0 } == true
        let vote: Vote = reason != nil ? .stop : due ? .checkpointDue : .carryOn
        let agreed = Vote(rawValue: Int(try world.allreduceMax(Double(vote.rawValue)))) ?? .stop
        switch agreed {
        case .stop: return (reason ?? "preempted (a signal to another rank)", false)
        case .checkpointDue: return (nil, true)
        case .carryOn: return (nil, false)
        }
    }

    /// The stretches between a step's boundaries took these seconds each.
    func recordMicroSteps(_ seconds: [Double], log: (String) -> Void) {
        guard let longest = seconds.max() else { return }
        let first = microStepSeconds == nil
        microStepSeconds = longest
        if first && isRoot {
            log(
                String(
                    format:
                        "margin: a micro-step takes %.2f s at most (from one boundary where a signal is read to the next; the last with the step's reduction and optimizer); a signal is honoured at the next boundary, then a save commits",
                    longest))
        }
        warnIfShort(log: log)
    }

    /// A save begins: the interval of --checkpoint-every-minutes counts from here.
    func saveStarted() { lastSave = now() }

    /// A save has returned: its time is not part of the stretch to the next boundary.
    func saveReturned() { lastBoundary = now() }

    /// A save committed, taking `seconds`.
    func recordSave(seconds: Double, log: (String) -> Void) {
        let first = saveSeconds == nil
        saveSeconds = seconds
        if first && isRoot, let micro = microStepSeconds {
            log(
                String(
                    format: "margin: a save takes %.2f s; a signal is honoured within %.2f s (a micro-step and a save)",
                    seconds, micro + seconds))
        }
        warnIfShort(log: log)
    }

    /// The lead a signal needs: a micro-step to the boundary and a save, a quarter spare.
    var leadNeeded: Double { 1.25 * margin }

    private func warnIfShort(log: (String) -> Void) {
        guard isRoot, !warned, let lead = signalLead, lead < leadNeeded else { return }
        warned = true
        log(
            String(
                format:
                    "warning: --signal-lead %.0f s cannot cover a micro-step and a save with a quarter to spare (%.2f s): a preempted job may be killed before its checkpoint commits; ask the scheduler for at least %.0f s (Slurm: --signal=B:USR1@%.0f) or shorten the micro-step",
                lead, margin, leadNeeded.rounded(.up), leadNeeded.rounded(.up)))
    }
}
