// When a run saves and when it stops: every --checkpoint-every steps, at the schedule's end, at
// --stop-after, and on preemption (PreemptionSignal.swift: SIGTERM, or SIGUSR1 which Slurm sends with
// --signal=USR1@120). The signal is only a flag read at the end of a step, so the step finishes and a
// checkpoint commits before exiting.

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

    /// What to do after step k (1-based) has been taken; `signal` names a preemption signal all ranks saw.
    func decision(afterStep k: Int, signal: String?) -> Decision {
        if let signal { return .saveAndStop(reason: "preempted (\(signal))") }
        if let stop = stopAfter, k >= stop, k < steps {
            return .saveAndStop(reason: "stopped after step \(k) as asked")
        }
        if k == steps || (every > 0 && k % every == 0) { return .save }
        return .continueTraining
    }
}
