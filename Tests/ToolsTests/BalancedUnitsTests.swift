// Balanced units at the paper's scale, with no training run: under sharding `gradients` and `full` every rank
// holds ⌈S/N⌉ of every unit (the last ranks' pieces shorter, never longer), so no rank's part of a unit's
// gather or reduce-scatter is larger than another's, for Llama 2 7B, 13B, 34B and 70B on 2 to 1024 ranks.
//
// The layout before (one flat range of ⌈P/N⌉ per rank over the whole model) fails the same check: 70B on 1024
// ranks puts each 856M-parameter block on 13 or 14 ranks, whose pieces of up to 67M floats (269 MB) each gather
// step then moves, 64× the balanced 0.84M; the test shows that too.
import Configuration
import Distributed
import Foundation
import Model
import Support
import Testing

@Suite struct BalancedUnitsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static func layout(_ name: String) throws -> ParameterLayout {
        ParameterLayout(config: try RunConfig.load(path: "\(root)/configs/\(name).json").model)
    }

    @Test(arguments: ["llama2-7b", "llama2-13b", "llama2-34b", "llama2-70b"])
    func everyRankHoldsTheSameShareOfEveryUnit(_ name: String) throws {
        let layout = try Self.layout(name)
        for ranks in [2, 3, 7, 64, 1024] {
            let partition = UnitPartition(units: layout.units, ranks: ranks)
            for (u, unit) in layout.units.enumerated() {
                let share = (unit.count + ranks - 1) / ranks
                let pieces = partition.pieces(ofUnit: u)
                let full = unit.count / share  // ranks whose piece is a whole share
                #expect(
                    pieces.allSatisfy { $0.count <= share }, "\(name), \(ranks) ranks, unit \(u): a piece over ⌈S/N⌉")
                #expect(
                    pieces.prefix(full).allSatisfy { $0.count == share }
                        && pieces.dropFirst(full).dropFirst().allSatisfy(\.isEmpty)
                        && pieces.reduce(0) { $0 + $1.count } == unit.count,
                    "\(name), \(ranks) ranks, unit \(u): pieces \(pieces.map(\.count))")
                #expect(zip(pieces, pieces.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
                // At these sizes every rank holds a piece of every unit: all of them send alike.
                #expect(pieces.allSatisfy { !$0.isEmpty }, "\(name), \(ranks) ranks, unit \(u): a rank holds none")
            }
            // Every element is held by exactly one rank, and no rank holds more than ⌈S/N⌉ of any unit: the
            // last rank's pieces fall short by less than N each.
            let held = (0..<ranks).map { partition.held(rank: $0) }
            #expect(held.reduce(0) { $0 + $1.count } == layout.count)
            let counts = held.map(\.count)
            #expect(
                counts.max()! == partition.largestHeld && counts.max()! - counts.min()! < layout.units.count * ranks)
        }
    }

    /// The old flat layout fails the check the balanced one passes.
    @Test func theFlatLayoutConcentratesABlockOnAFewRanks() throws {
        let layout = try Self.layout("llama2-70b")
        let ranks = 1024
        let flat = UnitPartition.flat(count: layout.count, ranks: ranks).pieces(ofUnit: 0)
        let block = layout.units[1]
        let overlaps = flat.map { r in max(0, min(r.upperBound, block.upperBound) - max(r.lowerBound, block.lowerBound))
        }
        let holders = overlaps.filter { $0 > 0 }.count
        let share = (block.count + ranks - 1) / ranks
        #expect(
            holders <= 14 && overlaps.max()! > 60 * share, "flat: \(holders) ranks, largest piece \(overlaps.max()!)")
        let balanced = UnitPartition(units: layout.units, ranks: ranks).pieces(ofUnit: 1)
        #expect(balanced.filter { !$0.isEmpty }.count == ranks && balanced.map(\.count).max() == share)
    }
}
