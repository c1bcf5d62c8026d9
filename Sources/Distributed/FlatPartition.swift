// FlatPartition: which rank owns which elements of a flat buffer (parameters, gradients, AdamW's moments), and
// the collectives over pieces of it that sharded data parallelism needs.
//
// Rank r of N owns [r·P, min((r+1)·P, count)) with P = ⌈count / N⌉: the same ranges checkpoints use, so a
// sharded run writes what it owns and any world size and sharding mode can read it back. A unit of the model
// (the embedding, one block, the head) is a contiguous range that several ranks may share a part of;
// `allgatherPieces` assembles a unit from every rank's part and `reduceScatterPieces` sums a unit's gradients
// and leaves each rank the sum of its own part.
import CMPI

public struct FlatPartition: Equatable, Sendable {
    public let count: Int
    public let ranks: Int

    public init(count: Int, ranks: Int) {
        precondition(count >= 0 && ranks >= 1)
        self.count = count
        self.ranks = ranks
    }

    /// Elements per rank before the last one is cut short: ⌈count / ranks⌉.
    public var perRank: Int { (count + ranks - 1) / ranks }

    public func range(rank: Int) -> Range<Int> {
        min(rank * perRank, count)..<min((rank + 1) * perRank, count)
    }

    /// Each rank's part of `range`, relative to range.lowerBound (empty where a rank owns none of it).
    public func pieces(of range: Range<Int>) -> [Range<Int>] {
        (0..<ranks).map { r in
            let owned = self.range(rank: r)
            let lo = max(owned.lowerBound, range.lowerBound), hi = min(owned.upperBound, range.upperBound)
            return lo < hi ? (lo - range.lowerBound)..<(hi - range.lowerBound) : (0..<0)
        }
    }
}

extension Communicator {
    /// `buffer` holds `range` (range.count floats); each rank's own part is in place. On return every rank
    /// holds all of it. One MPI_Allgatherv while the counts fit MPI's Int32; otherwise each part is broadcast
    /// from its owner in chunks.
    public func allgatherPieces(
        _ buffer: UnsafeMutablePointer<Float>, range: Range<Int>, partition: FlatPartition
    ) throws {
        let pieces = partition.pieces(of: range)
        if range.count <= Communicator.chunkLimit {
            var counts = pieces.map { Int32($0.count) }, displacements = pieces.map { Int32($0.lowerBound) }
            try watched("MPI_Allgatherv(\(range.count))") {
                MPI_Allgatherv(
                    lm_mpi_in_place(), 0, lm_mpi_float(), buffer, &counts, &displacements, lm_mpi_float(), comm)
            }
            return
        }
        for (root, piece) in pieces.enumerated() where !piece.isEmpty {
            try broadcast(buffer + piece.lowerBound, count: piece.count, root: root)
        }
    }

    /// Rank `root` receives every rank's own range of a partitioned buffer into `full` (partition.count floats;
    /// only read on the root), each rank sending `owned` (its range's floats). Point to point in chunks, so no
    /// count or displacement passes MPI's Int32 however large the buffer.
    public func gatherPieces(
        _ owned: UnsafePointer<Float>, into full: UnsafeMutablePointer<Float>?, partition: FlatPartition,
        root: Int = 0
    ) throws {
        let tag: Int32 = 7301
        for r in 0..<size {
            let range = partition.range(rank: r)
            var offset = 0
            while offset < range.count {
                let n = min(range.count - offset, Communicator.chunkLimit)
                if r == root && rank == root {
                    (full! + range.lowerBound + offset).update(from: owned + offset, count: n)
                } else if rank == root {
                    try watched("MPI_Recv(\(n) from rank \(r))") {
                        MPI_Recv(
                            full! + range.lowerBound + offset, Int32(n), lm_mpi_float(), Int32(r), tag, comm,
                            lm_mpi_status_ignore())
                    }
                } else if rank == r {
                    try watched("MPI_Send(\(n) to rank \(root))") {
                        MPI_Send(owned + offset, Int32(n), lm_mpi_float(), Int32(root), tag, comm)
                    }
                }
                offset += n
            }
        }
    }

    /// Sums `input` (range.count floats, the same range on every rank) across ranks and writes the sum of this
    /// rank's own part of the range to `output` (pieces(of: range)[rank].count floats). One
    /// MPI_Reduce_scatter while the counts fit; otherwise each part is reduced to its owner in chunks.
    public func reduceScatterPieces(
        _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, range: Range<Int>,
        partition: FlatPartition
    ) throws {
        let pieces = partition.pieces(of: range)
        if range.count <= Communicator.chunkLimit {
            var counts = pieces.map { Int32($0.count) }
            try watched("MPI_Reduce_scatter(\(range.count))") {
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
