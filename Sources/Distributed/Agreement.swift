// Rank agreement at start-up: every rank hashes each field of what must be identical everywhere (the
// effective config, the tokenizer, the data index), and one gather brings the hashes to rank 0, which names
// the fields and ranks that differ. Ranks launched with different configs (an MPMD launch, a stale file on
// one node) would otherwise train diverged replicas or corrupt memory in a mismatched collective.
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

public struct DisagreementError: Error, CustomStringConvertible {
    public let description: String
}

extension Communicator {
    /// Throws on every rank unless all ranks hold the same value for every field. `fields` must list the same
    /// names in the same order on every rank (a schema); the values may differ. Rank 0's error names each
    /// differing field and the ranks whose value differs from rank 0's.
    public func checkAgreement(_ what: String, fields: [(name: String, value: String)]) throws {
        guard size > 1 else { return }
        // Field names hash into the first word, so differing schemas are caught too.
        let schema = fnv1a(fields.map(\.name).joined(separator: "\u{1}"))
        let hashes = [schema] + fields.map { fnv1a($0.value) }
        let words = hashes.flatMap { [Int32(truncatingIfNeeded: $0), Int32(truncatingIfNeeded: $0 >> 32)] }
        var verdict = 0.0
        var report = ""
        if let all = try gather(words) {
            var differing: [String] = []
            for rank in 1..<size where all[rank].count != words.count || all[rank][0...1] != words[0...1] {
                differing.append(
                    "rank \(rank) lists other fields (other inputs or flags, or another version of llama-train)")
            }
            if differing.isEmpty {
                for (i, field) in fields.enumerated() {
                    let k = 2 * (i + 1)
                    let ranks = (1..<size).filter { all[$0][k..<(k + 2)] != words[k..<(k + 2)] }
                    if !ranks.isEmpty {
                        let shown = field.value.count > 80 ? String(field.value.prefix(77)) + "..." : field.value
                        differing.append(
                            "\(field.name): rank 0 has \(shown); rank(s) \(ranks.map(String.init).joined(separator: ", ")) differ"
                        )
                    }
                }
            }
            if !differing.isEmpty {
                verdict = 1
                report =
                    "the ranks disagree on their \(what):\n  " + differing.joined(separator: "\n  ")
                    + "\nevery rank must be launched with the same config, flags, tokenizer and data"
            }
        }
        guard try allreduceMax(verdict) > 0 else { return }
        if rank == 0 { throw DisagreementError(description: report) }
        // Rank 0 aborts the job with the details; give its message the time to win the race.
        sleep(10)
        throw DisagreementError(
            description: "rank \(rank): the ranks disagree on their \(what) (rank 0 names the fields)")
    }
}

/// FNV-1a, 64-bit: enough to tell values apart; not a cryptographic hash.
func fnv1a(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash &*= 0x100_0000_01b3
    }
    return hash
}
