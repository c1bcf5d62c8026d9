// `llama-train mpi-selftest`: every collective of the Distributed layer on known values, so the tests (and a
// user on a new cluster) can check MPI works across the ranks: `mpirun -np 3 llama-train mpi-selftest`.
import Distributed
import Foundation

enum MPISelfTest {
    static func run() throws {
        let world = try Communicator.world()
        let r = Float(world.rank), n = world.size
        var failures: [String] = []
        func check(_ ok: Bool, _ what: String) { if !ok { failures.append(what) } }

        var sum: [Float] = [r, 1, 2 * r]
        try sum.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: 3) }
        let ranks = Float(n * (n - 1) / 2)
        check(sum == [ranks, Float(n), 2 * ranks], "allreduce \(sum)")

        var pending: [Float] = (0..<1000).map { Float($0) + r }
        let request = try pending.withUnsafeMutableBufferPointer { try world.iallreduceSum($0.baseAddress!, count: 1000) }
        while try !request.test() {}
        check(pending[10] == Float(10 * n) + ranks, "iallreduce \(pending[10])")

        var value: [Float] = world.isRoot ? [42, 43] : [0, 0]
        try value.withUnsafeMutableBufferPointer { try world.broadcast($0.baseAddress!, count: 2) }
        check(value == [42, 43], "broadcast \(value)")

        let input = (0..<(2 * n)).map { Float($0) * (r + 1) }
        var block: [Float] = [0, 0]
        try input.withUnsafeBufferPointer { i in try block.withUnsafeMutableBufferPointer { try world.reduceScatterSum(i.baseAddress!, $0.baseAddress!, blockCount: 2) } }
        let factor = Float(n * (n + 1) / 2)
        check(block == [Float(2 * world.rank) * factor, Float(2 * world.rank + 1) * factor], "reduce-scatter \(block)")

        var gathered = [Float](repeating: -1, count: 2 * n)
        try block.withUnsafeBufferPointer { b in try gathered.withUnsafeMutableBufferPointer { try world.allgather(b.baseAddress!, $0.baseAddress!, blockCount: 2) } }
        check(gathered == (0..<(2 * n)).map { Float($0) * factor }, "allgather \(gathered)")

        check(try world.allreduceMax(Double(world.rank)) == Double(n - 1) && world.allreduceMin(Double(world.rank)) == 0, "max/min")
        let parts = try world.gather([Int32(world.rank), 7])
        if world.isRoot { check(parts == (0..<n).map { [Int32($0), 7] }, "gather") }
        try world.barrier()

        let allPassed = try world.allreduceSum(failures.isEmpty ? 0 : 1) == 0
        if !failures.isEmpty { FileHandle.standardError.write(Data("rank \(world.rank): \(failures.joined(separator: "; "))\n".utf8)) }
        if world.isRoot { print(allPassed ? "mpi-selftest: all collectives agree on \(n) rank(s) (thread level \(world.threadLevel))" : "mpi-selftest: FAILED") }
        Communicator.finalize()
        if !allPassed { exit(1) }
    }
}
