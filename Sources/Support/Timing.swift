// Timing helpers: the monotonic clock and the median, for progress lines and benchmarks (which report
// medians, since single timings on a shared machine are noisy).
import Foundation

/// Seconds on the monotonic clock, for timing.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

extension Array where Element == Double {
    public var median: Double {
        guard !isEmpty else { return 0 }
        let s = sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}

/// Seconds since this process started (Linux: /proc/self/stat's start time, in clock ticks since boot, against
/// CLOCK_BOOTTIME); nil where that cannot be read. What a run's start-up costs, loading included.
public func secondsSinceProcessStart() -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    // Fields after the command name (which may hold spaces), starting with field 3 (state); starttime is 22.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 19, let ticks = Double(fields[19]) else { return nil }
    var ts = timespec()
    clock_gettime(CLOCK_BOOTTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9 - ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}
