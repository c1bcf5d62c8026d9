// ShardedUnits: the model's units under sharding `gradients` (ZeRO-2) and `full` (ZeRO-3 / FSDP), for a model
// that trains, or (gathers only) a frozen model under `full`.
//
// Gradients (both modes): a unit's backward writes into one unit-sized working buffer; right after it, the
// buffer is reduce-scattered over the ranks and each rank adds the sum of its own piece into the gradients it
// keeps (its UnitPartition pieces: ⌈S/N⌉ of every unit, so every rank sends and receives alike). Every
// micro-step does this, so no full gradient buffer ever exists.
// Parameters (`full` only): each rank keeps its own pieces; a unit is allgathered into one of two slots just
// before its forward or backward, and while it computes the next unit (forward: u + 1; backward: u − 1) is
// gathered into the other slot on a communication thread with its own communicator. Within a step the
// parameters do not change, so a slot that still holds the unit asked for is used as it is; `invalidate()`
// after the optimizer step forgets them. Time waiting for a gather or inside a reduce-scatter on the compute
// thread is the exposed communication; the thread's gathers add to the total. A unit's reduce-scatter waits
// for the prefetch in flight, so the two never share the link.
import Distributed
import Foundation
import Kernels
import Model
import Support

final class ShardedUnits: UnitWeights, @unchecked Sendable {
    let model: LlamaModel
    let world: Communicator
    let partition: UnitPartition
    let shardsParameters: Bool
    private let units: [Range<Int>]
    /// Each unit's pieces (one per rank, relative to the unit) and where this rank's sits in its buffers.
    private let unitPieces: [[Range<Int>]]
    private let parameterOffsets: [Int?]
    private let gradientOffsets: [Int?]
    private let gradientWork: FloatBuffer
    private let reduced: FloatBuffer
    private let slots: [FloatBuffer]
    private let prefetcher: Prefetcher?
    private let lock = NSLock()
    private var slotUnit: [Int?] = [nil, nil]
    private var failure: Error?
    /// Seconds of this step's communication: all of it, and what the compute thread waited for.
    private(set) var communicationSeconds = 0.0
    private(set) var exposedSeconds = 0.0

    /// `model` keeps this rank's part of `partition` in its gradients (and, when `shardsParameters`, its parameters).
    init(
        model: LlamaModel, world: Communicator, partition: UnitPartition, shardsParameters: Bool, prefetch: Bool = true
    ) throws {
        precondition(partition.units == model.layout.units && partition.ranks == world.size)
        self.model = model
        self.world = world
        self.partition = partition
        self.shardsParameters = shardsParameters
        let units = model.layout.units
        let unitPieces = units.indices.map { partition.pieces(ofUnit: $0) }
        func offsets(_ held: HeldPieces) -> [Int?] {
            units.indices.map { u in
                let piece = unitPieces[u][world.rank]
                return piece.isEmpty ? nil : held.local(units[u].lowerBound + piece.lowerBound)
            }
        }
        (self.units, self.unitPieces) = (units, unitPieces)
        parameterOffsets = offsets(model.parameterPieces)
        gradientOffsets = offsets(model.gradientPieces)
        let largest = units.map(\.count).max() ?? 0
        // A frozen model (sharding full, no backward) needs the gathers only.
        let reduces = model.purpose.trains
        gradientWork = FloatBuffer(count: reduces ? largest : 0)
        reduced = FloatBuffer(count: reduces ? (units.indices.map { partition.pieceSize(ofUnit: $0) }.max() ?? 0) : 0)
        slots = shardsParameters ? [FloatBuffer(count: largest), FloatBuffer(count: largest)] : []
        // The gathers of the next unit overlap compute only when MPI lets two threads communicate at once.
        prefetcher =
            prefetch && shardsParameters && world.size > 1 && world.threadLevel >= 3
            ? Prefetcher(try world.duplicate()) : nil
    }

    /// Throws the first communication error of the step, if any.
    func checkFailure() throws {
        if let failure { throw failure }
    }

    func beginStep() {
        communicationSeconds = 0
        exposedSeconds = 0
    }

    /// The parameters changed (an optimizer step): no slot holds a current unit any more.
    func invalidate() {
        prefetcher?.waitIdle()
        slotUnit = [nil, nil]
    }

    // MARK: - UnitWeights

    func parametersForForward(unit u: Int) -> UnsafeMutablePointer<Float> {
        guard shardsParameters else { return model.parameters.pointer + units[u].lowerBound }
        let pointer = gathered(u)
        if u + 1 < units.count { prefetch(u + 1) }
        return pointer
    }

    func forwardFinished(unit: Int) {}

    func beginBackward(unit u: Int) -> (parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>)
    {
        gradientWork.pointer.update(repeating: 0, count: units[u].count)
        guard shardsParameters else { return (model.parameters.pointer + units[u].lowerBound, gradientWork.pointer) }
        let pointer = gathered(u)
        if u > 0 { prefetch(u - 1) }
        return (pointer, gradientWork.pointer)
    }

    func backwardFinished(unit u: Int) {
        let piece = unitPieces[u][world.rank]
        // The prefetch of unit u − 1 goes first: run beside it, the reduce-scatter would share the link and each
        // take as long as both, so the backward that needs u − 1 next would start no sooner, and the step's
        // communication would count the shared time twice.
        let waited = monotonicSeconds()
        prefetcher?.waitUntilIdle()
        exposedSeconds += monotonicSeconds() - waited
        let start = monotonicSeconds()
        do {
            try world.reduceScatterPieces(
                gradientWork.pointer, reduced.pointer, count: units[u].count, pieces: unitPieces[u])
        } catch {
            record(error)
        }
        let seconds = monotonicSeconds() - start
        communicationSeconds += seconds
        exposedSeconds += seconds
        if let offset = gradientOffsets[u] { lm_add(model.gradients.pointer + offset, reduced.pointer, piece.count) }
    }

    // MARK: - Gathering parameters

    private func record(_ error: Error) {
        lock.lock()
        if failure == nil { failure = error }
        lock.unlock()
    }

    /// Unit u's slot once its parameters are all there: already, after a prefetch in flight, or gathered now.
    private func gathered(_ u: Int) -> UnsafeMutablePointer<Float> {
        let slot = u % 2
        let start = monotonicSeconds()
        if let prefetcher {
            let (finished, seconds) = prefetcher.wait(unit: u)
            if finished { slotUnit[slot] = u }
            communicationSeconds += seconds
        }
        if slotUnit[slot] != u {
            let t0 = monotonicSeconds()
            gather(u, into: slots[slot], on: world)
            communicationSeconds += monotonicSeconds() - t0
            slotUnit[slot] = u
        }
        exposedSeconds += monotonicSeconds() - start
        return slots[slot].pointer
    }

    private func prefetch(_ u: Int) {
        guard let prefetcher, slotUnit[u % 2] != u else { return }
        slotUnit[u % 2] = nil  // being overwritten
        prefetcher.start(unit: u) { [self] communicator in gather(u, into: slots[u % 2], on: communicator) }
    }

    /// This rank's part of unit u into its place in `slot`, then every rank's part from the others.
    private func gather(_ u: Int, into slot: FloatBuffer, on communicator: Communicator) {
        let piece = unitPieces[u][world.rank]
        if let offset = parameterOffsets[u] {
            (slot.pointer + piece.lowerBound).update(from: model.parameters.pointer + offset, count: piece.count)
        }
        do {
            try communicator.allgatherPieces(slot.pointer, count: units[u].count, pieces: unitPieces[u])
        } catch {
            record(error)
        }
    }
}

/// One gather at a time on a thread of its own, with its own communicator (collectives on it never
/// interleave with the compute thread's reduce-scatters).
private final class Prefetcher: @unchecked Sendable {
    private let communicator: Communicator
    private let condition = NSCondition()
    private var job: (unit: Int, work: (Communicator) -> Void)?
    private var running: Int?
    private var done: Int?
    private var seconds = 0.0

    init(_ communicator: Communicator) {
        self.communicator = communicator
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = "prefetch"
        thread.stackSize = 1 << 20
        thread.start()
    }

    func start(unit: Int, _ work: @escaping (Communicator) -> Void) {
        condition.lock()
        while job != nil || running != nil { condition.wait() }
        job = (unit, work)
        done = nil
        condition.broadcast()
        condition.unlock()
    }

    /// Waits for a gather of `unit` if one is queued or running; true when it finished one.
    func wait(unit: Int) -> (Bool, Double) {
        condition.lock()
        defer { condition.unlock() }
        while job?.unit == unit || running == unit { condition.wait() }
        let spent = seconds
        seconds = 0
        return (done == unit, spent)
    }

    /// Waits for the gather in flight, if any, to finish (keeping what it finished for `wait(unit:)`).
    func waitUntilIdle() {
        condition.lock()
        while job != nil || running != nil { condition.wait() }
        condition.unlock()
    }

    func waitIdle() {
        condition.lock()
        while job != nil || running != nil { condition.wait() }
        done = nil
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while job == nil { condition.wait() }
            let current = job!
            job = nil
            running = current.unit
            condition.unlock()
            let start = monotonicSeconds()
            current.work(communicator)
            condition.lock()
            seconds += monotonicSeconds() - start
            running = nil
            done = current.unit
            condition.broadcast()
            condition.unlock()
        }
    }
}
