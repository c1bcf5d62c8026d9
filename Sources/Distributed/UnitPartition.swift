// UnitPartition: which rank owns which elements of a model's flat buffers (parameters, gradients, AdamW's
// moments) under sharding, and the collectives over a unit's pieces that sharded data parallelism needs.
//
// Every unit (the embedding, each block, the heads; or, for sharding `optimizer`, the whole buffer as one
// unit) is split evenly over all ranks, as FSDP splits its flat parameter per unit: rank r owns
// [lo + r·c, min(lo + (r+1)·c, hi)) of unit [lo, hi), c = ⌈(hi − lo) / N⌉. So a unit's allgather and
// reduce-scatter take c floats from every rank (the last ranks' pieces may be shorter, never longer), and a
// ring moves c per step. (A single flat range per rank over the whole model, [r·⌈P/N⌉, (r+1)·⌈P/N⌉), puts a
// 70B block on 13 or 14 of 1024 ranks: each gather then moves a 269 MB piece at every one of its 1023 steps.)
// A rank keeps its pieces end to end in unit order (HeldPieces); checkpoints write them so and record them.
import CMPI
import Support

public struct UnitPartition: Equatable, Sendable {
    /// Contiguous units covering 0..<count in order.
    public let units: [Range<Int>]
    public let ranks: Int

    public init(units: [Range<Int>], ranks: Int) {
        precondition(ranks >= 1 && zip(units, units.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        precondition(units.first.map { $0.lowerBound == 0 } ?? true)
        self.units = units
        self.ranks = ranks
    }

    /// The whole buffer as one unit: one even range per rank.
    public static func flat(count: Int, ranks: Int) -> UnitPartition {
        UnitPartition(units: [0..<count], ranks: ranks)
    }

    public var count: Int { units.last?.upperBound ?? 0 }

    /// The most any rank holds of unit u: ⌈size / ranks⌉.
    public func pieceSize(ofUnit u: Int) -> Int { (units[u].count + ranks - 1) / ranks }

    /// Rank r's part of unit u, relative to the unit's start (empty where it owns none of it).
    public func piece(ofUnit u: Int, rank r: Int) -> Range<Int> {
        let size = units[u].count, c = pieceSize(ofUnit: u)
        return min(r * c, size)..<min((r + 1) * c, size)
    }

    /// Each rank's part of unit u, relative to the unit's start.
    public func pieces(ofUnit u: Int) -> [Range<Int>] { (0..<ranks).map { piece(ofUnit: u, rank: $0) } }

    /// Rank r's pieces of every unit, in global order.
    public func held(rank r: Int) -> HeldPieces {
        HeldPieces(
            units.indices.map { u in
                let piece = piece(ofUnit: u, rank: r)
                return (units[u].lowerBound + piece.lowerBound)..<(units[u].lowerBound + piece.upperBound)
            })
    }

    /// The most floats any rank holds.
    public var largestHeld: Int { units.indices.reduce(0) { $0 + pieceSize(ofUnit: $1) } }
}

extension Communicator {
    /// `buffer` holds a unit of `count` floats split into `pieces` (one per rank, relative to the buffer);
    /// each rank's own piece is in place. On return every rank holds all of it. One MPI_Allgatherv while the
    /// counts fit MPI's Int32; otherwise each piece is broadcast from its owner in chunks.
    public func allgatherPieces(_ buffer: UnsafeMutablePointer<Float>, count: Int, pieces: [Range<Int>]) throws {
        precondition(pieces.count == size)
        if count <= Communicator.chunkLimit {
            var counts = pieces.map { Int32($0.count) }, displacements = pieces.map { Int32($0.lowerBound) }
            try watched("MPI_Allgatherv(\(count))") {
                MPI_Allgatherv(
                    lm_mpi_in_place(), 0, lm_mpi_float(), buffer, &counts, &displacements, lm_mpi_float(), comm)
            }
            return
        }
        for (root, piece) in pieces.enumerated() where !piece.isEmpty {
            try broadcast(buffer + piece.lowerBound, count: piece.count, root: root)
        }
    }

    /// Sums `buffer` (`count` floats) across ranks in place as a ring allreduce does: a reduce-scatter of even
    /// pieces (⌈count/N⌉) into `piece`, which holds one, then an allgather of them.
    public func ringAllreduceSum(
        _ buffer: UnsafeMutablePointer<Float>, count: Int, piece: UnsafeMutablePointer<Float>
    )
        throws
    {
        let pieces = UnitPartition.flat(count: count, ranks: size).pieces(ofUnit: 0)
        try reduceScatterPieces(buffer, piece, count: count, pieces: pieces)
        (buffer + pieces[rank].lowerBound).update(from: piece, count: pieces[rank].count)
        try allgatherPieces(buffer, count: count, pieces: pieces)
    }

    /// Sums `input` (a unit of `count` floats, on every rank) across ranks and writes the sum of this rank's
    /// own piece to `output` (pieces[rank].count floats; `pieces` are consecutive from 0). One
    /// MPI_Reduce_scatter while the counts fit; otherwise each piece is reduced to its owner in chunks.
    public func reduceScatterPieces(
        _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, count: Int, pieces: [Range<Int>]
    ) throws {
        precondition(pieces.count == size)
        if count <= Communicator.chunkLimit {
            var counts = pieces.map { Int32($0.count) }
            try watched("MPI_Reduce_scatter(\(count))") {
                MPI_Reduce_scatter(input, output, &counts, lm_mpi_float(), lm_mpi_sum(), comm)
            }
            return
        }
        for (root, piece) in pieces.enumerated() where !piece.isEmpty {
            var offset = 0
            while offset < piece.count {
                let n = min(piece.count - offset, Communicator.chunkLimit)
                try watched("MPI_Reduce(part \(n), root \(root))") {
                    MPI_Reduce(
                        input + piece.lowerBound + offset, rank == root ? output + offset : nil, Int32(n),
                        lm_mpi_float(),
                        lm_mpi_sum(), Int32(root), comm)
                }
                offset += n
            }
        }
    }
}
