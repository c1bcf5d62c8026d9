// PreemptionSignal: SIGTERM and SIGUSR1 caught as a flag that every rank reads at each micro-step boundary, so
// a preempted job saves instead of dying (CheckpointPolicy.swift's RunClock agrees on it, and what follows). What this is not: a handler
// that does work in signal context; the flag is set on a dispatch source's queue.
import Foundation

/// SIGTERM and SIGUSR1 become a flag the loop reads at each micro-step boundary. Installed at the start of a
/// training command (before configs are read or memory allocated), so an early signal is never the default
/// exit 143 that loses the run without a word.
public final class PreemptionSignal: @unchecked Sendable {
    public static let shared = PreemptionSignal()
    private let lock = NSLock()
    private var signal: Int32?
    private var sources: [DispatchSourceSignal] = []

    /// Starts catching the signals; idempotent.
    public func install() {
        lock.lock()
        defer { lock.unlock() }
        guard sources.isEmpty else { return }
        for number in [SIGTERM, SIGUSR1] {
            Foundation.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.receive(number) }
            source.resume()
            sources.append(source)
        }
    }

    /// Gives the signals their default action back, once the run is over: mpirun ends the job's remaining
    /// processes with SIGTERM when one exits non-zero, and an ignored SIGTERM would make it wait for SIGKILL.
    public func uninstall() {
        lock.lock()
        defer { lock.unlock() }
        for source in sources { source.cancel() }
        sources.removeAll()
        for number in [SIGTERM, SIGUSR1] { Foundation.signal(number, SIG_DFL) }
    }

    /// Records `number` as received (the handler; the tests' seam).
    func receive(_ number: Int32) {
        lock.lock()
        signal = number
        lock.unlock()
    }

    var received: Bool {
        lock.lock()
        defer { lock.unlock() }
        return signal != nil
    }
    var name: String {
        lock.lock()
        defer { lock.unlock() }
        return signal == SIGUSR1 ? "SIGUSR1" : "SIGTERM"
    }

}
