// BucketedAllreduce: sums a flat gradient buffer across ranks in buckets, overlapped with backward.
//
// Buckets are fixed flat ranges taken from the end of the buffer backwards, since backward finishes
// gradients in reverse layout order (lm_head first, the embedding last); a bucket may split a tensor. The
// order is the same on every rank. Backward reports a watermark ("every gradient at flat offset ≥ w is
// final"); buckets wholly above it are handed to a communication thread that reduces them one after another
// with blocking calls (Horovod's design: non-blocking MPI would need polling from inside backward to
// progress). `finish` hands over the rest and waits; the wait is the communication left exposed.
// An fp32 bucket is reduced as a ring allreduce does it, a reduce-scatter of even pieces and an allgather
// (what NCCL and Horovod run): OpenMPI's own MPI_Allreduce picks by message size and rank count, and on 3
// ranks over TCP chose an algorithm that sent 2.5× the bucket from one rank (measured in the network lab),
// which no ring formula prices. The bf16 wire format keeps MPI_Allreduce with its own sum.
import CMPI
import Foundation

public final class BucketedAllreduce: @unchecked Sendable {
    public let communicator: Communicator
    public let bucketRanges: [Range<Int>]
    private let buffer: UnsafeMutablePointer<Float>
    private let condition = NSCondition()
    private var queue: [Int] = []  // bucket indices handed over, not yet started
    private var nextToHandOver = 0
    private var completed = 0
    private var failure: Error?
    private var thread: Thread?
    private var stopping = false
    /// Seconds the communication thread spent reducing buckets during the current step.
    public private(set) var communicationSeconds = 0.0
    /// bf16 on the wire (grad_reduce: bf16): half the bytes, partial sums rounded to 8 significant bits.
    public let bf16: Bool
    private let scratch: UnsafeMutablePointer<UInt16>?
    /// This rank's piece of a bucket, summed (the ring's reduce-scatter output).
    private let piece: UnsafeMutablePointer<Float>?

    /// `bucketBytes` is rounded to whole floats; at least one float per bucket.
    public init(
        communicator: Communicator, buffer: UnsafeMutablePointer<Float>, count: Int, bucketBytes: Int,
        bf16: Bool = false
    ) {
        self.communicator = communicator
        self.buffer = buffer
        self.bf16 = bf16
        let per = max(1, min(bucketBytes / MemoryLayout<Float>.stride, Communicator.chunkLimit))
        // Buckets are reduced one after another, so one bucket's worth of bf16 serves them all.
        scratch = bf16 ? UnsafeMutablePointer<UInt16>.allocate(capacity: per) : nil
        let ranks = communicator.size
        piece = !bf16 && ranks > 1 ? UnsafeMutablePointer<Float>.allocate(capacity: (per + ranks - 1) / ranks) : nil
        var ranges: [Range<Int>] = []
        var end = count
        while end > 0 {
            ranges.append(max(0, end - per)..<end)
            end -= per
        }
        bucketRanges = ranges
    }

    deinit {
        scratch?.deallocate()
        piece?.deallocate()
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    /// Starts a step: no bucket is handed over yet.
    public func begin() {
        condition.lock()
        precondition(queue.isEmpty && completed == nextToHandOver, "begin() while a step is in flight")
        nextToHandOver = 0
        completed = 0
        communicationSeconds = 0
        condition.unlock()
        // Without thread support from MPI the buckets are reduced in finish(), on this thread, unoverlapped.
        if thread == nil && communicator.size > 1 && communicator.threadLevel >= Int32(MPI_THREAD_SERIALIZED) {
            let t = Thread { [unowned self] in self.communicationLoop() }
            t.name = "allreduce"
            t.stackSize = 1 << 20
            thread = t
            t.start()
        }
    }

    /// Backward has finished every gradient at offsets ≥ `watermark`: hand over the buckets above it.
    public func ready(from watermark: Int) {
        condition.lock()
        while nextToHandOver < bucketRanges.count && bucketRanges[nextToHandOver].lowerBound >= watermark {
            queue.append(nextToHandOver)
            nextToHandOver += 1
        }
        condition.broadcast()
        condition.unlock()
    }

    /// Hands over what is left and waits for every bucket; returns the seconds spent waiting (exposed).
    public func finish() throws -> Double {
        ready(from: 0)
        let start = Date()
        if communicator.size > 1 && thread == nil {
            for range in bucketRanges { try reduce(range) }
        }
        condition.lock()
        if communicator.size == 1 || thread == nil {
            completed = bucketRanges.count
            queue.removeAll()
        }
        while completed < bucketRanges.count && failure == nil { condition.wait() }
        let error = failure
        condition.unlock()
        if let error { throw error }
        return Date().timeIntervalSince(start)
    }

    private func reduce(_ range: Range<Int>) throws {
        if let scratch {
            try communicator.allreduceSumBF16(buffer + range.lowerBound, count: range.count, scratch: scratch)
        } else if let piece {
            try communicator.ringAllreduceSum(buffer + range.lowerBound, count: range.count, piece: piece)
        } else {
            try communicator.allreduceSum(buffer + range.lowerBound, count: range.count)
        }
    }

    private func communicationLoop() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopping { condition.wait() }
            if stopping {
                condition.unlock()
                return
            }
            let bucket = queue.removeFirst()
            condition.unlock()
            let range = bucketRanges[bucket]
            let start = Date()
            do {
                try reduce(range)
            } catch {
                condition.lock()
                failure = error
                condition.broadcast()
                condition.unlock()
                return
            }
            condition.lock()
            communicationSeconds += Date().timeIntervalSince(start)
            completed += 1
            condition.broadcast()
            condition.unlock()
        }
    }
}
