// Watchdog: a collective that waits longer than the timeout ends the job with a message naming the ranks that
// never arrived, instead of hanging forever (pytorch#46874, horovod#2107: one stuck rank blocks everyone).
//
// Every blocking call of a watched communicator registers here. A thread checks every 100 ms:
//  1. A rank that has waited past the timeout announces it to every other rank (a small non-blocking send on
//     its own communicator), and so does any rank that hears an announcement while itself waiting.
//  2. After a grace period the ranks that have not announced are the ones that never arrived; the first rank
//     whose grace ends aborts the job (MPI_Abort) with a message naming them, the step and the call.
// A rank that is merely slow arrives before the timeout, and nothing happens.
import Foundation

public final class Watchdog: @unchecked Sendable {
    public let timeout: TimeInterval
    public let grace: TimeInterval
    /// The step the trainer is in, for the message.
    public var step: Int {
        get { lock.withLock { currentStep } }
        set { lock.withLock { currentStep = newValue } }
    }

    private let comm: Communicator
    private let lock = Lock()
    private var currentStep = 0
    private var calls: [Int: (call: String, since: Date)] = [:]
    private var nextToken = 0
    private var reporters: [Int: (step: Int64, waitedMs: Int64)] = [:]
    private var announcedAt: Date?
    private var sent = false
    private var sends: [Request] = []
    private var stopping = false
    private let stopped = DispatchSemaphore(value: 0)
    private static let tag: Int32 = 7001
    nonisolated(unsafe) private static var running: [Watchdog] = []
    private static let registry = Lock()

    /// Stops every watchdog thread; MPI must not be called from them once it is finalised.
    static func stopAll() {
        let dogs = registry.withLock {
            defer { running.removeAll() }
            return running
        }
        for dog in dogs {
            dog.lock.withLock { dog.stopping = true }
            dog.stopped.wait()
        }
    }

    /// Starts watching `world`'s blocking collectives; nil when MPI cannot serve a second thread. A
    /// communicator has one watchdog: a second trainer in the same job (a later stage, a test) gets the one
    /// already watching, never a second thread that would replace the first in `world.watchdog`.
    public static func start(on world: Communicator, timeout: TimeInterval) throws -> Watchdog? {
        if let running = world.watchdog { return running }
        guard timeout > 0, world.size > 1, world.threadLevel >= 3 /* MPI_THREAD_MULTIPLE */ else { return nil }
        let dog = Watchdog(comm: try world.duplicate(), timeout: timeout)
        world.watchdog = dog
        registry.withLock { running.append(dog) }
        let thread = Thread { dog.loop() }
        thread.name = "watchdog"
        thread.start()
        return dog
    }

    private init(comm: Communicator, timeout: TimeInterval) {
        self.comm = comm
        self.timeout = timeout
        grace = min(max(timeout / 4, 1), 10)
    }

    func enter(_ call: String) -> Int {
        lock.withLock {
            nextToken += 1
            calls[nextToken] = (call, Date())
            return nextToken
        }
    }

    func exit(_ token: Int) {
        lock.withLock { _ = calls.removeValue(forKey: token) }
    }

    private func loop() {
        // MPI calls (the announcements) run on a thread of their own: over a dead TCP link they can block,
        // and the decision to abort must not wait for them.
        let messengerDone = DispatchSemaphore(value: 0)
        let messenger = Thread { [self] in
            defer { messengerDone.signal() }
            while !lock.withLock({ stopping }) {
                usleep(100_000)
                do { try exchange() } catch {
                    FileHandleWriter.standardError("[rank \(comm.rank)] watchdog messages stopped: \(error)\n")
                    return
                }
            }
        }
        messenger.name = "watchdog-messages"
        messenger.start()
        while true {
            usleep(100_000)
            if lock.withLock({ stopping }) {
                messengerDone.wait()  // no MPI call may be in flight when MPI is finalised
                stopped.signal()
                return
            }
            decide()
        }
    }

    /// Receives announcements, and sends ours once we are due to announce.
    private func exchange() throws {
        while let report = try comm.receiveIfPresent(count: 3, tag: Watchdog.tag) {
            lock.withLock { reporters[Int(report[0])] = (report[1], report[2]) }
        }
        let (due, step, waited) = lock.withLock { () -> (Bool, Int, Double) in
            let oldest = calls.values.map(\.since).min()
            return (announcedAt != nil && !sent, currentStep, oldest.map { Date().timeIntervalSince($0) } ?? 0)
        }
        if due {
            lock.withLock { sent = true }
            let message: [Int64] = [Int64(comm.rank), Int64(step), Int64(waited * 1000)]
            let requests = try (0..<comm.size).filter { $0 != comm.rank }.map {
                try comm.sendNonBlocking(message, to: $0, tag: Watchdog.tag)
            }
            lock.withLock { sends += requests }
        }
    }

    private func decide() {
        let now = Date()
        let (oldest, step, heard, announced) = lock.withLock {
            (calls.values.min { $0.since < $1.since }, currentStep, !reporters.isEmpty, announcedAt)
        }
        guard let oldest else {
            // The collective completed after all: whoever was late arrived. Forget the episode.
            lock.withLock {
                announcedAt = nil
                sent = false
                reporters.removeAll()
            }
            return
        }
        let waited = now.timeIntervalSince(oldest.since)
        if announced == nil && (waited > timeout || heard) {
            lock.withLock { announcedAt = now }
        } else if let announced, now.timeIntervalSince(announced) > grace {
            let waiting = lock.withLock { Set(reporters.keys) }.union([comm.rank])
            let missing = (0..<comm.size).filter { !waiting.contains($0) }
            let message = String(
                format:
                    "watchdog: waited %.0f s in %@ at step %d; rank(s) %@ never arrived (rank(s) %@ waiting). Aborting the job; check those ranks' hosts, links and logs.",
                waited, oldest.call, step, missing.map(String.init).joined(separator: ", "),
                waiting.sorted().map(String.init).joined(separator: ", "))
            // MPI_Abort itself may block behind a wedged transport: leave on our own after a few seconds.
            DispatchQueue.global().asyncAfter(deadline: .now() + 5) { _exit(134) }
            comm.abort(message)
        }
    }
}
