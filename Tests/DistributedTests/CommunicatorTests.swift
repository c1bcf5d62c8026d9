// The MPI layer in a process started without mpirun: a world of one, whose collectives are identities.
// Multi-rank behaviour is tested under a real mpirun by the training loop's tests.
import Distributed
import Testing

@Suite struct CommunicatorTests {
    @Test func singletonWorldWorks() throws {
        let world = try Communicator.world()
        #expect(world.rank == 0 && world.size == 1 && world.isRoot)
        var values: [Float] = [1, 2, 3]
        try values.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: 3) }
        #expect(values == [1, 2, 3])
        #expect(try world.allreduceSum(2.5) == 2.5)
        values = [4, -5, 6.5]
        try values.withUnsafeMutableBufferPointer { try world.broadcast($0.baseAddress!, count: 3) }
        #expect(values == [4, -5, 6.5], "a broadcast from the only rank leaves its values as they are")
        try world.barrier()
        #expect(try Communicator.world() === world, "MPI is initialised once per process")
    }
}
