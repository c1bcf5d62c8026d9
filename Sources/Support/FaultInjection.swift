// The seam through which tests inject faults a valid run cannot be made to produce on demand: a NaN loss at
// a given step, a rank killed after writing its checkpoint shard and before the commit. Only the tests'
// twin of the executable (Tests/FaultInjection) sets these; in llama-train they stay nil, and production code
// reads no test variables from the environment.
public enum FaultInjection {
    /// The loss step k (1-based) reports instead of its own, or nil to keep it.
    nonisolated(unsafe) public static var lossAtStep: ((Int) -> Double?)?
    /// Called on rank r once its checkpoint shard is written, before the commit's gather.
    nonisolated(unsafe) public static var shardWritten: ((Int) -> Void)?
}
