// `llama-train mpi-selftest`: every collective of the Distributed layer on known values, so the tests (and a
// user on a new cluster) can check MPI works across the ranks: `mpirun -np 3 llama-train mpi-selftest`.
import Checkpoint
import Configuration
import Distributed
import FineTune
import Foundation
import Model
import Support
import Tools
import Training

enum MPISelfTest {
    static let spec = CommandSpec(
        name: "mpi-selftest",
        summary: "check every collective on known values: mpirun -np 3 llama-train mpi-selftest",
        flags: [],
        run: { _ in try run() })

    static func run() throws {
        let world = try Communicator.world()
        let r = Float(world.rank), n = world.size
        var failures: [String] = []
        func check(_ ok: Bool, _ what: String) { if !ok { failures.append(what) } }

        var sum: [Float] = [r, 1, 2 * r]
        try sum.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: 3) }
        let ranks = Float(n * (n - 1) / 2)
        check(sum == [ranks, Float(n), 2 * ranks], "allreduce \(sum)")

        // Non-blocking allreduce carries one bucket, never more than a chunk.
        let bucket = min(1000, Communicator.chunkLimit)
        var pending: [Float] = (0..<bucket).map { Float($0) + r }
        let request = try pending.withUnsafeMutableBufferPointer {
            try world.iallreduceSum($0.baseAddress!, count: bucket)
        }
        while try !request.test() {}
        check(pending == (0..<bucket).map { Float($0 * n) + ranks }, "iallreduce \(pending.prefix(3))")

        // Blocks of 1000 floats, so LLAMA_TRAIN_MPI_CHUNK=7 sends each collective in many chunks.
        let m = 1000
        var value = (0..<m).map { world.isRoot ? Float($0) : -1 }
        try value.withUnsafeMutableBufferPointer { try world.broadcast($0.baseAddress!, count: m) }
        check(value == (0..<m).map(Float.init), "broadcast \(value.prefix(3))")

        var long = (0..<(3 * m)).map { Float($0 % 97) + r }
        try long.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: 3 * m) }
        check(long == (0..<(3 * m)).map { Float(n) * Float($0 % 97) + ranks }, "chunked allreduce \(long.prefix(3))")

        let input = (0..<(m * n)).map { Float($0 % 1009) * (r + 1) }
        var block = [Float](repeating: 0, count: m)
        try input.withUnsafeBufferPointer { i in
            try block.withUnsafeMutableBufferPointer {
                try world.reduceScatterSum(i.baseAddress!, $0.baseAddress!, blockCount: m)
            }
        }
        let factor = Float(n * (n + 1) / 2)
        check(
            block == (0..<m).map { Float((world.rank * m + $0) % 1009) * factor }, "reduce-scatter \(block.prefix(3))")

        var gathered = [Float](repeating: -1, count: m * n)
        try block.withUnsafeBufferPointer { b in
            try gathered.withUnsafeMutableBufferPointer {
                try world.allgather(b.baseAddress!, $0.baseAddress!, blockCount: m)
            }
        }
        check(gathered == (0..<(m * n)).map { Float($0 % 1009) * factor }, "allgather \(gathered.prefix(3))")

        check(
            try world.allreduceMax(Double(world.rank)) == Double(n - 1) && world.allreduceMin(Double(world.rank)) == 0,
            "max/min")
        let parts = try world.gather([Int32(world.rank), 7])
        if world.isRoot { check(parts == (0..<n).map { [Int32($0), 7] }, "gather") }
        try world.barrier()

        let allPassed = try world.allreduceSum(failures.isEmpty ? 0 : 1) == 0
        if !failures.isEmpty {
            FileHandle.standardError.write(Data("rank \(world.rank): \(failures.joined(separator: "; "))\n".utf8))
        }
        if world.isRoot {
            print(
                allPassed
                    ? "mpi-selftest: all collectives agree on \(n) rank(s) (thread level \(world.threadLevel), chunks of at most \(Communicator.chunkLimit) elements)"
                    : "mpi-selftest: FAILED")
        }
        Communicator.finalize()
        if !allPassed { exit(1) }
    }
}

/// `llama-train allreduce-bench --floats N [--iters K]`: raw MPI_Allreduce of N floats, the bar the bucketed
/// allreduce is held against. Prints the median time and the bus bandwidth, 2 (R − 1) / R × bytes / time.
enum AllreduceBench {
    static let spec = CommandSpec(
        name: "allreduce-bench",
        summary: "raw MPI_Allreduce time and bus bandwidth at one message size (run under mpirun)",
        flags: [
            Flag(
                "floats", .int(min: 1, max: 1 << 40), "N", default: "6553600",
                "message size in floats (the default is 25 MB)"),
            Flag("iters", .int(min: 1, max: 100_000), "K", default: "10", "timed calls, the median reported"),
            Flag(
                "bucket-mb", .number(min: 0.001, inclusive: true, max: 1_048_576), "X",
                "the trainer's bucketed path with this bucket size"),
            Flag(
                "chunk-mb", .number(min: 0.001, inclusive: true, max: 1_048_576), "X",
                "raw MPI_Allreduce in messages of this size"),
        ],
        run: run)

    static func run(_ args: inout Arguments) throws {
        let floats = args.int(declared: "floats")
        let iterations = args.int(declared: "iters")
        let bucketMB = args.number("bucket-mb")
        let chunkMB = args.number("chunk-mb")
        let world = try Communicator.world()
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: floats)
        // With --bucket-mb, the trainer's own path: buckets handed to the communication thread all at once.
        let buckets = bucketMB.map {
            BucketedAllreduce(communicator: world, buffer: buffer, count: floats, bucketBytes: Int($0 * 1_048_576))
        }
        var times: [Double] = []
        for i in 0..<(iterations + 2) {
            try world.barrier()
            let start = Date()
            if let buckets {
                buckets.begin()
                _ = try buckets.finish()
            } else if let chunkMB {
                // Raw MPI_Allreduce over the same buffer in messages of the bucket size, one after another.
                let chunk = max(1, Int(chunkMB * 1_048_576) / 4)
                var end = floats
                while end > 0 {
                    let start = max(0, end - chunk)
                    try world.allreduceSum(buffer + start, count: end - start)
                    end = start
                }
            } else {
                try world.allreduceSum(buffer, count: floats)
            }
            if i >= 2 { times.append(Date().timeIntervalSince(start)) }  // two warm-up calls
        }
        let median = times.sorted()[times.count / 2]
        let worst = try world.allreduceMax(median)
        let bytes = Double(4 * floats)
        let bus = world.size > 1 ? 2 * Double(world.size - 1) / Double(world.size) * bytes / worst : 0
        if world.isRoot {
            print(
                String(
                    format: "%@allreduce of %.1f MB on %d rank(s): %.2f ms (median of %d), bus bandwidth %.2f GB/s",
                    bucketMB.map { String(format: "bucketed (%.0f MB) ", $0) } ?? chunkMB.map {
                        String(format: "raw, in %.0f MB messages, ", $0)
                    } ?? "", bytes / 1e6, world.size, worst * 1e3,
                    iterations, bus / 1e9))
            print(
                "{\"ranks\": \(world.size), \"bytes\": \(Int(bytes)), \"seconds\": \(worst), \"bus_bytes_per_s\": \(bus)}"
            )
        }
        Communicator.finalize()
    }
}
