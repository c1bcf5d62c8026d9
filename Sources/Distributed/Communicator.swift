// Communicator: the job's processes as Swift sees them, over MPI_COMM_WORLD.
//
// What this is: init/finalize, rank and size, and the collectives the trainer uses, with every MPI return
// code checked and turned into an `MPIError` that names the rank and the call. What this is not: a policy
// layer. Bucketing, overlap and the decision to abort live with the training loop.
import CMPI

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

public struct MPIError: Error, CustomStringConvertible {
    public let call: String
    public let rank: Int
    public let code: Int32
    public let message: String

    public var description: String {
        "MPI error on rank \(rank) in \(call): \(message) (code \(code))"
    }
}

public final class Communicator: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// The thread support MPI granted (MPI_THREAD_MULTIPLE is asked for; a communication thread needs it).
    public let threadLevel: Int32
    let comm: MPI_Comm
    /// MPI counts are Int32: every collective moves larger buffers in chunks of at most this many elements
    /// (7B's 6.7e9 parameters are four chunks). LLAMA_TRAIN_MPI_CHUNK lowers it, so tests exercise the
    /// chunked paths on small buffers.
    public static let chunkLimit: Int = {
        if let raw = getenv("LLAMA_TRAIN_MPI_CHUNK"), let n = Int(String(cString: raw)), n >= 1 {
            return min(n, Int(Int32.max))
        }
        return Int(Int32.max)
    }()

    /// Calls `body(offset, count)` over [0, total) in chunks of at most chunkLimit.
    private func chunked(_ total: Int, _ body: (Int, Int) throws -> Void) rethrows {
        var done = 0
        repeat {
            let n = min(total - done, Communicator.chunkLimit)
            try body(done, n)
            done += n
        } while done < total
    }

    /// A float datatype of `count` elements whose extent is `stride` elements: chunk c of every rank's block.
    private func stridedChunkType(count: Int, stride: Int) throws -> MPI_Datatype {
        var contiguous: MPI_Datatype? = lm_mpi_float(), resized: MPI_Datatype? = lm_mpi_float()
        try check("MPI_Type_contiguous", MPI_Type_contiguous(Int32(count), lm_mpi_float(), &contiguous))
        try check(
            "MPI_Type_create_resized",
            MPI_Type_create_resized(contiguous, 0, MPI_Aint(stride * MemoryLayout<Float>.stride), &resized))
        MPI_Type_free(&contiguous)
        try check("MPI_Type_commit", MPI_Type_commit(&resized))
        return resized!
    }

    /// The world communicator, initialised on first use (once per process, as MPI requires).
    /// A process started without mpirun is a world of one.
    public static func world() throws -> Communicator {
        try worldLock.withLock {
            if let world = sharedWorld { return world }
            let world = try Communicator(initialising: ())
            sharedWorld = world
            return world
        }
    }

    nonisolated(unsafe) private static var sharedWorld: Communicator?
    private static let worldLock = Lock()

    private init(initialising: Void) throws {
        var initialised: Int32 = 0
        MPI_Initialized(&initialised)
        var provided: Int32 = 0
        if initialised == 0 {
            // The communication thread of a later stage issues collectives beside the compute thread.
            let code = MPI_Init_thread(nil, nil, Int32(MPI_THREAD_MULTIPLE), &provided)
            if code != MPI_SUCCESS {
                throw MPIError(call: "MPI_Init_thread", rank: -1, code: code, message: Communicator.errorString(code))
            }
        }
        if initialised != 0 { MPI_Query_thread(&provided) }
        threadLevel = provided
        comm = lm_mpi_comm_world()
        // Return codes instead of the default abort, so a failure can be reported with its rank and call.
        MPI_Comm_set_errhandler(comm, lm_mpi_errors_return())
        var r: Int32 = 0
        var s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r)
        size = Int(s)
    }

    public var isRoot: Bool { rank == 0 }

    /// The collective watchdog every blocking call of this communicator reports to, if any.
    public var watchdog: Watchdog?

    private init(duplicating parent: Communicator, comm: MPI_Comm) {
        rank = parent.rank
        size = parent.size
        threadLevel = parent.threadLevel
        self.comm = comm
    }

    /// A new communicator over the same ranks (MPI_Comm_dup): collectives on it never interleave with the
    /// parent's, so a background thread (checkpoint writing, the watchdog) can use it safely.
    public func duplicate() throws -> Communicator {
        var copy: MPI_Comm? = lm_mpi_comm_null()
        try check("MPI_Comm_dup", MPI_Comm_dup(comm, &copy))
        MPI_Comm_set_errhandler(copy, lm_mpi_errors_return())
        let duplicate = Communicator(duplicating: self, comm: copy!)
        duplicate.watchdog = watchdog  // a checkpoint's commit is watched like any other collective
        return duplicate
    }

    /// How many ranks of this communicator share this rank's node (MPI_Comm_split_type with
    /// MPI_COMM_TYPE_SHARED): they divide the node's memory.
    public func ranksOnThisNode() throws -> Int {
        var node: MPI_Comm? = lm_mpi_comm_null()
        try check(
            "MPI_Comm_split_type",
            MPI_Comm_split_type(comm, lm_mpi_comm_type_shared(), Int32(rank), lm_mpi_info_null(), &node))
        defer { MPI_Comm_free(&node) }
        var count: Int32 = 0
        try check("MPI_Comm_size", MPI_Comm_size(node, &count))
        return Int(count)
    }

    /// Point-to-point messages for the watchdog: a few Int64 to `destination`, without waiting.
    func sendNonBlocking(_ values: [Int64], to destination: Int, tag: Int32) throws -> Request {
        var request: MPI_Request? = lm_mpi_request_null()
        let buffer = UnsafeMutablePointer<Int64>.allocate(capacity: values.count)
        buffer.initialize(from: values, count: values.count)
        try check(
            "MPI_Isend", MPI_Isend(buffer, Int32(values.count), lm_mpi_int64(), Int32(destination), tag, comm, &request)
        )
        return Request(request, communicator: self, call: "MPI_Isend", owning: buffer)
    }

    /// Receives a pending message of `count` Int64 with `tag` from anyone, if one has arrived.
    func receiveIfPresent(count: Int, tag: Int32) throws -> [Int64]? {
        var flag: Int32 = 0
        var status = MPI_Status()
        try check("MPI_Iprobe", MPI_Iprobe(MPI_ANY_SOURCE, tag, comm, &flag, &status))
        guard flag != 0 else { return nil }
        var values = [Int64](repeating: 0, count: count)
        try check(
            "MPI_Recv",
            MPI_Recv(&values, Int32(count), lm_mpi_int64(), status.MPI_SOURCE, tag, comm, lm_mpi_status_ignore()))
        return values
    }
    /// Whether MPI was initialised in this process (and not yet finalised).
    public static var isInitialized: Bool {
        var initialised: Int32 = 0, finalized: Int32 = 0
        MPI_Initialized(&initialised)
        MPI_Finalized(&finalized)
        return initialised != 0 && finalized == 0
    }

    public func barrier() throws {
        try watched("MPI_Barrier") { MPI_Barrier(comm) }
    }

    /// Sums `count` floats across ranks, in place (in chunks when count exceeds MPI's Int32 counts).
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try chunked(count) { offset, n in
            try watched("MPI_Allreduce(float, \(n))") {
                MPI_Allreduce(lm_mpi_in_place(), buffer + offset, Int32(n), lm_mpi_float(), lm_mpi_sum(), comm)
            }
        }
    }

    /// Sums `count` floats across ranks with bf16 on the wire: half the bytes of `allreduceSum`, each partial
    /// sum rounded to bf16 (8 significant bits). `scratch` holds at least `count` values.
    public func allreduceSumBF16(
        _ buffer: UnsafeMutablePointer<Float>, count: Int, scratch: UnsafeMutablePointer<UInt16>
    ) throws {
        lm_floats_to_bf16(scratch, buffer, count)
        try chunked(count) { offset, n in
            try watched("MPI_Allreduce(bf16, \(n))") {
                MPI_Allreduce(lm_mpi_in_place(), scratch + offset, Int32(n), lm_mpi_uint16(), lm_mpi_bf16_sum(), comm)
            }
        }
        lm_bf16_to_floats(buffer, scratch, count)
    }

    /// Starts summing `count` floats in place; the request must be completed with `wait` (or polled with
    /// `test`, since non-blocking MPI makes progress only inside MPI calls).
    public func iallreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Request {
        precondition(count <= Communicator.chunkLimit, "iallreduce of \(count) floats: split it into buckets")
        var request: MPI_Request? = lm_mpi_request_null()
        try check(
            "MPI_Iallreduce(float, \(count))",
            MPI_Iallreduce(lm_mpi_in_place(), buffer, Int32(count), lm_mpi_float(), lm_mpi_sum(), comm, &request))
        return Request(request, communicator: self, call: "MPI_Iallreduce(float, \(count))")
    }

    /// Element-wise max and min of doubles across ranks, e.g. to prove every rank holds the same parameters.
    public func allreduceMax(_ value: Double) throws -> Double {
        var v = value
        try watched("MPI_Allreduce(max)") {
            MPI_Allreduce(lm_mpi_in_place(), &v, 1, lm_mpi_double(), lm_mpi_max(), comm)
        }
        return v
    }

    public func allreduceMin(_ value: Double) throws -> Double {
        var v = value
        try watched("MPI_Allreduce(min)") {
            MPI_Allreduce(lm_mpi_in_place(), &v, 1, lm_mpi_double(), lm_mpi_min(), comm)
        }
        return v
    }

    /// Sums `input` (size × blockCount floats) across ranks; rank r receives block r in `output`. Blocks
    /// larger than a chunk go chunk by chunk.
    public func reduceScatterSum(
        _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, blockCount: Int
    ) throws {
        if blockCount <= Communicator.chunkLimit {
            return try watched("MPI_Reduce_scatter_block(\(blockCount))") {
                MPI_Reduce_scatter_block(input, output, Int32(blockCount), lm_mpi_float(), lm_mpi_sum(), comm)
            }
        }
        // MPI's reductions take basic datatypes only, so a chunk of every rank's block cannot be one strided
        // type here: each rank's chunk is reduced to it in turn (the same bytes move as in one reduce-scatter).
        try chunked(blockCount) { offset, n in
            for root in 0..<size {
                try watched("MPI_Reduce(chunk \(n) of \(blockCount), root \(root))") {
                    MPI_Reduce(
                        input + root * blockCount + offset, rank == root ? output + offset : nil, Int32(n),
                        lm_mpi_float(),
                        lm_mpi_sum(), Int32(root), comm)
                }
            }
        }
    }

    /// Concatenates every rank's `blockCount` floats, in rank order, on every rank. Blocks larger than a chunk
    /// go chunk by chunk: chunk c of every rank's block lands through one strided receive datatype.
    public func allgather(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, blockCount: Int) throws
    {
        if blockCount <= Communicator.chunkLimit {
            return try watched("MPI_Allgather(\(blockCount))") {
                MPI_Allgather(input, Int32(blockCount), lm_mpi_float(), output, Int32(blockCount), lm_mpi_float(), comm)
            }
        }
        try chunked(blockCount) { offset, n in
            var type: MPI_Datatype? = try stridedChunkType(count: n, stride: blockCount)
            defer { MPI_Type_free(&type) }
            try watched("MPI_Allgather(chunk \(n) of \(blockCount))") {
                MPI_Allgather(input + offset, Int32(n), lm_mpi_float(), output + offset, 1, type, comm)
            }
        }
    }

    /// Sums `count` doubles across ranks, in place.
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) throws {
        try chunked(count) { offset, n in
            try watched("MPI_Allreduce(double, \(n))") {
                MPI_Allreduce(lm_mpi_in_place(), buffer + offset, Int32(n), lm_mpi_double(), lm_mpi_sum(), comm)
            }
        }
    }

    /// Every rank's `value`, by rank (counts and offsets: a double holds integers to 2^53 exactly).
    public func allgather(_ value: Double) throws -> [Double] {
        var mine = value
        var all = [Double](repeating: 0, count: size)
        try watched("MPI_Allgather(double)") {
            MPI_Allgather(&mine, 1, lm_mpi_double(), &all, 1, lm_mpi_double(), comm)
        }
        return all
    }

    public func allreduceSum(_ value: Double) throws -> Double {
        var v = value
        try allreduceSum(&v, count: 1)
        return v
    }

    /// Every rank sends `outgoing[d]` to rank d and gets what each rank sent it, by source (MPI_Alltoallv).
    /// For metadata and token batches: at most 2^31 − 1 Int32 in all on a rank.
    public func allToAll(_ outgoing: [[Int32]]) throws -> [[Int32]] {
        precondition(outgoing.count == size, "one outgoing array per rank")
        var sendCounts = outgoing.map { Int32($0.count) }
        var receiveCounts = [Int32](repeating: 0, count: size)
        try watched("MPI_Alltoall(counts)") {
            MPI_Alltoall(&sendCounts, 1, lm_mpi_int32(), &receiveCounts, 1, lm_mpi_int32(), comm)
        }
        func displacements(_ counts: [Int32]) throws -> [Int32] {
            var d = [Int32](repeating: 0, count: size), total = 0
            for r in 0..<size {
                d[r] = Int32(total)
                total += Int(counts[r])
            }
            guard total <= Int(Int32.max) else {
                throw MPIError(
                    call: "MPI_Alltoallv", rank: rank, code: 0, message: "\(total) elements exceed MPI's Int32 counts")
            }
            return d
        }
        var sendDisplacements = try displacements(sendCounts)
        var receiveDisplacements = try displacements(receiveCounts)
        var send = outgoing.flatMap { $0 }
        if send.isEmpty { send = [0] }
        var receive = [Int32](repeating: 0, count: max(1, receiveCounts.reduce(0) { $0 + Int($1) }))
        try watched("MPI_Alltoallv(\(send.count))") {
            MPI_Alltoallv(
                &send, &sendCounts, &sendDisplacements, lm_mpi_int32(), &receive, &receiveCounts,
                &receiveDisplacements, lm_mpi_int32(), comm)
        }
        return (0..<size).map {
            Array(receive[Int(receiveDisplacements[$0])..<(Int(receiveDisplacements[$0]) + Int(receiveCounts[$0]))])
        }
    }

    /// Gathers every rank's Int32 array on `root` (in rank order); other ranks get nil.
    public func gather(_ local: [Int32], root: Int = 0) throws -> [[Int32]]? {
        var count = Int32(local.count)
        var counts = [Int32](repeating: 0, count: size)
        try watched("MPI_Gather(counts)") {
            MPI_Gather(&count, 1, lm_mpi_int32(), &counts, 1, lm_mpi_int32(), Int32(root), comm)
        }
        var displacements = [Int32](repeating: 0, count: size)
        for r in 1..<max(size, 1) where size > 1 { displacements[r] = displacements[r - 1] + counts[r - 1] }
        let total = counts.reduce(0) { $0 + Int($1) }
        // Gather carries metadata (hashes, ranges), never tensors; a total past Int32 is a caller's mistake.
        guard total <= Int(Int32.max) else {
            throw MPIError(
                call: "MPI_Gatherv", rank: rank, code: 0, message: "\(total) elements in all exceed MPI's Int32 counts")
        }
        var all = [Int32](repeating: 0, count: rank == root ? max(total, 1) : 1)
        var send = local.isEmpty ? [Int32(0)] : local
        try watched("MPI_Gatherv(\(local.count))") {
            MPI_Gatherv(&send, count, lm_mpi_int32(), &all, &counts, &displacements, lm_mpi_int32(), Int32(root), comm)
        }
        guard rank == root else { return nil }
        return (0..<size).map { Array(all[Int(displacements[$0])..<Int(displacements[$0] + counts[$0])]) }
    }

    /// Gathers every rank's bytes on `root` (metadata such as JSON), packed four to an Int32.
    public func gather(bytes local: [UInt8], root: Int = 0) throws -> [[UInt8]]? {
        var words = [Int32](repeating: 0, count: (local.count + 3) / 4 + 1)
        words[0] = Int32(local.count)
        if !local.isEmpty {
            words.withUnsafeMutableBytes { raw in
                local.withUnsafeBytes {
                    raw.baseAddress!.advanced(by: 4).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                }
            }
        }
        guard let all = try gather(words, root: root) else { return nil }
        return all.map { w in w.withUnsafeBytes { Array($0[4..<(4 + Int(w[0]))]) } }
    }

    /// Copies `count` floats from `root` to every rank.
    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int = 0) throws {
        try chunked(count) { offset, n in
            try watched("MPI_Bcast(float, \(n), root \(root))") {
                MPI_Bcast(buffer + offset, Int32(n), lm_mpi_float(), Int32(root), comm)
            }
        }
    }

    /// `root`'s bytes on every rank (an input only rank 0 can read, such as standard input under mpirun).
    public func broadcast(bytes: [UInt8], root: Int = 0) throws -> [UInt8] {
        var count = [Double(bytes.count)]
        try count.withUnsafeMutableBufferPointer { p in
            try watched("MPI_Bcast(length, root \(root))") {
                MPI_Bcast(p.baseAddress!, 1, lm_mpi_double(), Int32(root), comm)
            }
        }
        var out = rank == root ? bytes : [UInt8](repeating: 0, count: Int(count[0]))
        let total = out.count
        try out.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < total {
                let n = min(1 << 30, total - offset)
                try watched("MPI_Bcast(bytes, \(n), root \(root))") {
                    MPI_Bcast(raw.baseAddress! + offset, Int32(n), lm_mpi_byte(), Int32(root), comm)
                }
                offset += n
            }
        }
        return out
    }

    /// Ends the whole job with `message` on standard error: the way out that never leaves ranks hanging.
    public func abort(_ message: String, code: Int32 = 1) -> Never {
        FileHandleWriter.standardError("[rank \(rank)] \(message)\n")
        MPI_Abort(comm, code)
        fatalError("MPI_Abort returned")
    }

    public static func finalize() {
        Watchdog.stopAll()
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 { MPI_Finalize() }
    }

    /// Runs a blocking MPI call under the watchdog's eye and checks its return code.
    func watched(_ call: @autoclosure () -> String, _ body: () -> Int32) throws {
        let token = watchdog?.enter(call())
        let code = body()
        if let token { watchdog?.exit(token) }
        try check(call(), code)
    }

    func check(_ call: String, _ code: Int32) throws {
        if code != MPI_SUCCESS {
            throw MPIError(call: call, rank: rank, code: code, message: Communicator.errorString(code))
        }
    }

    private static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
        var length: Int32 = 0
        MPI_Error_string(code, &buffer, &length)
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An MPI request of a non-blocking collective.
public final class Request: @unchecked Sendable {
    private var request: MPI_Request?
    private let communicator: Communicator
    private let call: String
    private let owned: UnsafeMutablePointer<Int64>?

    init(
        _ request: MPI_Request?, communicator: Communicator, call: String,
        owning owned: UnsafeMutablePointer<Int64>? = nil
    ) {
        self.request = request
        self.communicator = communicator
        self.call = call
        self.owned = owned
    }

    deinit { owned?.deallocate() }

    /// Progresses the operation; true once it has completed.
    public func test() throws -> Bool {
        var flag: Int32 = 0
        try communicator.check("MPI_Test(\(call))", MPI_Test(&request, &flag, lm_mpi_status_ignore()))
        return flag != 0
    }

    public func wait() throws {
        try communicator.check("MPI_Wait(\(call))", MPI_Wait(&request, lm_mpi_status_ignore()))
    }
}
