// Watchdog: a collective that waits longer than the timeout ends the job with a message naming the ranks that
// never arrived, instead of hanging forever (pytorch#46874, horovod#2107: one stuck rank blocks everyone).
//
// Every blocking call of a watched communicator registers here. A thread checks every 100 ms:
//  1. A rank that has waited past the timeout announces it to the coordinators: ranks 0..<K with
//     K = max(2, ⌈log₂ N⌉) (all of them when N is smaller), each a small non-blocking send on the watchdog's own
//     communicator. A coordinator that announces, or hears an announcement while itself waiting, also asks every
//     other rank to announce if it is waiting (a poke, heeded only by a rank inside a call), and asks those it
//     has not heard from again every half grace, so ranks that arrived later than the first are counted too.
//  2. After a grace period the ranks that have not announced are the ones that never arrived; the first
//     coordinator whose grace ends aborts the job (MPI_Abort) with a message naming them, the step and the call.
//     Should every coordinator be among the stuck (none poked it), a waiting rank aborts after three graces
//     naming them.
// So a stall costs 2·K·N messages, all ranks together, and 2·K more per silent rank (O(N log N)), where
// telling every rank would be N²: a million at 1024 ranks. A rank that is merely slow arrives before the
// timeout, and nothing happens.
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
    /// The call (its token) this rank announced it waits in.
    private var episodeCall: Int?
    private var sent = false
    private var poked = false
    private var lastPoke: Date?
    private var sends: [Request] = []
    /// Messages this rank has sent, all stalls together (the log says it: the tests count them).
    private var messagesSent = 0
    /// Ranks 0..<coordinators collect the announcements and decide.
    let coordinators: Int
    var isCoordinator: Bool { comm.rank < coordinators }
    private var stopping = false
    private let stopped = DispatchSemaphore(value: 0)
    private static let tag: Int32 = 7001
    /// A message's first word: "I am waiting" (to the coordinators) or "announce if you are waiting" (from one).
    private static let announcement: Int64 = 0, poke: Int64 = 1
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
        coordinators = Self.coordinatorCount(ranks: comm.size)
    }

    /// K = max(2, ⌈log₂ N⌉), at most N: enough that a stall taking a few of them still has one to decide.
    static func coordinatorCount(ranks: Int) -> Int {
        var log2 = 0
        while 1 << log2 < ranks { log2 += 1 }
        return min(ranks, max(2, log2))
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

    /// Receives announcements and pokes, and sends ours once we are due to announce.
    private func exchange() throws {
        while let report = try comm.receiveIfPresent(count: 4, tag: Watchdog.tag) {
            lock.withLock {
                if report[0] == Watchdog.poke {
                    // A poke for a call this rank has not reached says nothing of the next one it enters.
                    if !calls.isEmpty { poked = true }
                } else {
                    reporters[Int(report[1])] = (report[2], report[3])
                }
            }
        }
        let (due, step, waited) = lock.withLock { () -> (Bool, Int, Double) in
            let oldest = calls.values.map(\.since).min()
            return (announcedAt != nil && !sent, currentStep, oldest.map { Date().timeIntervalSince($0) } ?? 0)
        }
        let me = comm.rank
        guard due else {
            try pokeAgain()
            return
        }
        lock.withLock { (sent, lastPoke) = (true, Date()) }
        var messages = (0..<coordinators).filter { $0 != me }.map {
            ([Watchdog.announcement, Int64(me), Int64(step), Int64(waited * 1000)], $0)
        }
        if isCoordinator {
            messages += (coordinators..<comm.size).map { ([Watchdog.poke, Int64(me), 0, 0], $0) }
        }
        let requests = try messages.map { try comm.sendNonBlocking($0.0, to: $0.1, tag: Watchdog.tag) }
        let total = lock.withLock {
            sends += requests
            messagesSent += requests.count
            return messagesSent
        }
        FileHandleWriter.standardError(
            "[rank \(me)] watchdog: waited \(Int(waited)) s at step \(step); \(requests.count) message(s) sent (\(total) in all)\n"
        )
    }

    /// A coordinator asks the ranks it has not heard from again every half grace: one that was still computing
    /// at the first poke may be waiting now.
    private func pokeAgain() throws {
        guard isCoordinator else { return }
        let silent = lock.withLock { () -> [Int] in
            guard sent, let last = lastPoke, Date().timeIntervalSince(last) > grace / 2 else { return [] }
            lastPoke = Date()
            return (coordinators..<comm.size).filter { reporters[$0] == nil }
        }
        let requests = try silent.map {
            try comm.sendNonBlocking([Watchdog.poke, Int64(comm.rank), 0, 0], to: $0, tag: Watchdog.tag)
        }
        lock.withLock {
            sends += requests
            messagesSent += requests.count
        }
    }

    private func decide() {
        let now = Date()
        let (oldestEntry, step, heard, announced, episode) = lock.withLock {
            (
                calls.min { $0.value.since < $1.value.since }, currentStep, !reporters.isEmpty || poked, announcedAt,
                episodeCall
            )
        }
        // The call announced about completed after all (the late rank arrived): forget the episode, even when the
        // next call began between two looks.
        guard let (token, oldest) = oldestEntry, announced == nil || episode == token else {
            lock.withLock {
                announcedAt = nil
                sent = false
                poked = false
                lastPoke = nil
                reporters.removeAll()
            }
            return
        }
        let waited = now.timeIntervalSince(oldest.since)
        if announced == nil && (waited > timeout || heard) {
            lock.withLock { (announcedAt, episodeCall) = (now, token) }
        } else if let announced, !isCoordinator, !heard, now.timeIntervalSince(announced) > 3 * grace {
            // No coordinator aborted, nor asked: they are all among the stuck.
            let message = String(
                format:
                    "watchdog: waited %.0f s in %@ at step %d; rank(s) %@ (the watchdog's coordinators) never arrived, and maybe others. Aborting the job; check those ranks' hosts, links and logs.",
                waited, oldest.call, step, (0..<coordinators).map(String.init).joined(separator: ", "))
            DispatchQueue.global().asyncAfter(deadline: .now() + 5) { _exit(134) }
            comm.abort(message)
        } else if let announced, isCoordinator, now.timeIntervalSince(announced) > grace {
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
