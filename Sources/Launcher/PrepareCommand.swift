// `llama-train prepare`: documents to token shards. Under mpirun the documents are dealt round-robin to the
// ranks, tokenised in parallel and gathered on rank 0 in their original order, so the output is the same
// whatever the number of processes.
import Checkpoint
import Configuration
import Dataset
import Distributed
import FineTune
import Foundation
import Model
import Support
import Tokenizer
import Tools
import Training

enum PrepareCommand {
    static let spec = CommandSpec(
        name: "prepare",
        summary: "documents (plain text, or .jsonl with \"text\") to token shards with BOS/EOS; parallel under mpirun",
        flags: [
            Flag("tokenizer", .text, "FILE", required: true, "the tokenizer.model to encode with"),
            Flag("input", .list, "[NAME=]PATH", required: true, "inputs; NAME groups them into a source for mixture weights"),
            Flag("out", .text, "DIR", required: true, "where the shards and index.json go"),
            Flag("delimiter", .text, "LINE", "split plain text into documents at lines equal to this (fortune files: %)"),
            Flag("shard-tokens", .int(min: 1, max: 1 << 40), "N", "tokens per shard file (default 64M)"),
        ],
        run: run)

    static func run(_ args: inout Arguments) throws {
        let tokenizerPath = try args.require("tokenizer")
        let inputs = args.list("input").map(InputSpec.init(argument:))
        let out = try args.require("out")
        let delimiter = args.string("delimiter")
        let shardTokens = args.int("shard-tokens", default: 64 << 20)

        let world = try Communicator.world()
        let tokenizer = try Tokenizer(path: tokenizerPath)
        let modelBytes = [UInt8](FileManager.default.contents(atPath: tokenizerPath)!)
        let hash = SHA256.hex(modelBytes)
        // Every rank must tokenise the same inputs with the same tokenizer, or rank 0 would write mixed tokens
        // under its own hash.
        let inputHashes = inputs.enumerated().map { i, input in
            (name: "--input \(i + 1)",
             value: "\(input.source)=\(input.path) (SHA-256 " + (FileManager.default.contents(atPath: input.path).map { SHA256.hex([UInt8]($0)) } ?? "unreadable") + ")")
        }
        try world.checkAgreement("prepare inputs", fields: [("tokenizer (SHA-256)", hash), ("--out", out), ("--delimiter", delimiter ?? "absent"),
                                                            ("--shard-tokens", "\(shardTokens)"), ("inputs", "\(inputs.count)")]
                                                           + inputHashes)
        // Every rank reads the inputs (cheap next to tokenising) so that errors name the file on every rank.
        var documents: [(source: String, text: String)] = []
        for input in inputs {
            for text in try Documents.read(input.path, delimiter: delimiter) { documents.append((input.source, text)) }
        }
        let start = Date()
        var local: [Int32] = []  // per document: length, then tokens
        for i in stride(from: world.rank, to: documents.count, by: world.size) {
            let ids = tokenizer.encode(documents[i].text, bos: true, eos: true)
            local.append(Int32(ids.count))
            local += ids
        }
        guard let parts = try world.gather(local) else { return }  // rank 0 writes
        var cursors = [Int](repeating: 0, count: world.size)
        var bySource: [String: [[Int32]]] = [:]
        for i in documents.indices {
            let r = i % world.size
            let n = Int(parts[r][cursors[r]])
            bySource[documents[i].source, default: []].append(Array(parts[r][(cursors[r] + 1)...(cursors[r] + n)]))
            cursors[r] += n + 1
        }
        var order: [String] = []
        for input in inputs where !order.contains(input.source) { order.append(input.source) }
        let sources = order.map { name in
            (name: name, inputs: inputs.filter { $0.source == name }.map(\.path), documents: bySource[name] ?? [])
        }
        let index = try ShardWriter.write(sources: sources, vocabSize: tokenizer.vocabSize, tokenizerHash: hash,
                                          shardTokens: shardTokens, to: out)
        let seconds = Date().timeIntervalSince(start)
        for s in index.sources {
            print("\(s.name): \(s.documents) documents, \(s.tokens) tokens in \(s.shards.count) shard(s)")
        }
        print(String(format: "prepared %@ with %d rank(s) in %.2f s (tokenizer sha256 %@…)", out, world.size, seconds,
                     String(hash.prefix(12))))
    }
}
