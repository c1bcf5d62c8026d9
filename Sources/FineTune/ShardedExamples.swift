// Fine-tuning data read once across the ranks, not once per rank: each rank reads, parses and tokenizes only
// the lines that start in its 1/N of the file's bytes (DialogueData.load(world:)) and keeps their examples;
// the examples are numbered in file order across the ranks, so the epoch's seeded order, the packing and every
// batch are the same for any rank count. A step's examples come from the ranks that hold them in one
// all-to-all, which every rank computes alike from every rank's batch.
//
// What a rank holds: its own examples (1/N of the set), the global count per rank, and for SFT one length per
// example (8 bytes each: 11 MB at Llama 2's 1.4M pairs), plus the examples of the batch it trains on.
import Distributed
import Foundation
import Support

/// Examples spread over the ranks, global index g on the rank whose range of lines held it.
public final class ShardedExamples<Element>: @unchecked Sendable {
    public let total: Int
    /// Global index of each rank's first example, then the total.
    private let first: [Int]
    private let mine: [Element]
    private let world: Communicator?
    private let encode: (Element) -> [Int32]
    private let decode: (ArraySlice<Int32>) -> Element

    /// `local`: this rank's examples in file order; `world` nil (or of one rank): they are all of them.
    public init(
        local: [Element], world: Communicator?, encode: @escaping (Element) -> [Int32],
        decode: @escaping (ArraySlice<Int32>) -> Element
    ) throws {
        (mine, self.world, self.encode, self.decode) = (local, world, encode, decode)
        let counts = try world?.allgather(Double(local.count)) ?? [Double(local.count)]
        first = counts.reduce(into: [0]) { $0.append($0.last! + Int($1)) }
        total = first.last!
    }

    /// The rank holding example g.
    func owner(of g: Int) -> Int { first.segment(holding: g) }

    /// This rank's own examples with their global indices (for statistics every rank sums its part of).
    public var local: [(index: Int, element: Element)] {
        let base = first[world?.rank ?? 0]
        return mine.enumerated().map { (base + $0.offset, $0.element) }
    }

    /// The examples `needs[world.rank]` names, in that order. Every rank must call it with every rank's needs
    /// (computed alike everywhere): each sends the examples it holds that others need, one all-to-all.
    public func fetch(_ needs: [[Int]]) throws -> [Element] {
        let rank = world?.rank ?? 0, ranks = world?.size ?? 1
        precondition(needs.count == ranks, "one list of needs per rank")
        guard let world, ranks > 1 else { return needs[0].map { mine[$0] } }
        var outgoing = [[Int32]](repeating: [], count: ranks)
        for (d, wanted) in needs.enumerated() where d != rank {
            for g in wanted where owner(of: g) == rank {
                let payload = encode(mine[g - first[rank]])
                outgoing[d].append(Int32(payload.count))
                outgoing[d] += payload
            }
        }
        let incoming = try world.allToAll(outgoing)
        var cursor = [Int](repeating: 0, count: ranks)
        return needs[rank].map { g in
            let o = owner(of: g)
            if o == rank { return mine[g - first[rank]] }
            let n = Int(incoming[o][cursor[o]])
            defer { cursor[o] += 1 + n }
            return decode(incoming[o][(cursor[o] + 1)..<(cursor[o] + 1 + n)])
        }
    }
}

extension SFTExample {
    /// Tokens, then one 0/1 per token for the answer flags.
    public static func encode(_ e: SFTExample) -> [Int32] { e.tokens + e.answer.map { $0 ? 1 : 0 } }
    public static func decode(_ words: ArraySlice<Int32>) -> SFTExample {
        let n = words.count / 2, start = words.startIndex
        return SFTExample(tokens: Array(words[start..<(start + n)]), answer: words[(start + n)...].map { $0 != 0 })
    }
}

extension PreferencePair {
    /// Rating, the margin's bits, the chosen sequence's length, the chosen and rejected tokens, then one 0/1
    /// per token for the answer flags of both.
    public static func encode(_ p: PreferencePair) -> [Int32] {
        [Int32(p.rating.rawValue), Int32(bitPattern: p.margin.bitPattern), Int32(p.chosen.count)] + p.chosen
            + p.rejected + (p.chosenAnswer + p.rejectedAnswer).map { $0 ? 1 : 0 }
    }
    public static func decode(_ words: ArraySlice<Int32>) -> PreferencePair {
        let s = words.startIndex, n = Int(words[s + 2]), m = (words.count - 3) / 2 - n
        let flags = s + 3 + n + m
        return PreferencePair(
            chosen: Array(words[(s + 3)..<(s + 3 + n)]), rejected: Array(words[(s + 3 + n)..<flags]),
            rating: Rating(rawValue: Int(words[s]))!, margin: Float(bitPattern: UInt32(bitPattern: words[s + 1])),
            chosenAnswer: words[flags..<(flags + n)].map { $0 != 0 },
            rejectedAnswer: words[(flags + n)...].map { $0 != 0 })
    }
}
