// `llama-train prepare`: documents to token shards, streamed. Under mpirun every rank reads its own parts of
// the inputs (byte ranges of large files, whole compressed files), tokenises them and writes its own shards;
// rank 0 writes index.json from the metadata the ranks send. A source's token stream, read in index order,
// is the same for any number of ranks (Preparation says how).
import Dataset
import Distributed
import Foundation
import Support
import Tokenizer

enum PrepareCommand {
    static let spec = CommandSpec(
        name: "prepare",
        summary:
            "documents (plain text or .jsonl, .gz/.zst too, or .parquet) to token shards with BOS/EOS, streamed; parallel under mpirun",
        flags: [
            Flag("tokenizer", .text, "FILE", required: true, "the tokenizer.model to encode with"),
            Flag(
                "input", .list, "[NAME=]PATH", required: true,
                "inputs (.gz and .zst read as streams; .parquet split by row group); NAME groups them into a source for mixture weights"
            ),
            Flag("out", .text, "DIR", required: true, "where the shards and index.json go"),
            Flag(
                "delimiter", .text, "LINE", "split plain text into documents at lines equal to this (fortune files: %)"),
            Flag(
                "text-field", .text, "NAME", default: "text",
                "the JSON Lines field or Parquet column that holds the text"),
            Flag(
                "skip-bad-lines", .toggle, "",
                "skip lines (Parquet: rows) that are not valid UTF-8 or JSON or lack the text field (each named), instead of stopping"
            ),
            Flag(
                "shard-tokens", .int(min: 1, max: 1 << 40), "N", default: "\(64 << 20)",
                "tokens per shard file (64M)"),
        ],
        run: run)

    static func run(_ args: inout Arguments) throws {
        let tokenizerPath = try args.require("tokenizer")
        let inputs = args.list("input").map(InputSpec.init(argument:))
        let out = try args.require("out")
        let options = DocumentOptions(
            textField: args.string(declared: "text-field"),
            delimiter: args.string("delimiter"),
            skipBadLines: args.flag("skip-bad-lines"))
        let shardTokens = args.int(declared: "shard-tokens")
        // The shards' names come from the sources, so any index.json or .bin the inputs name inside --out
        // (an earlier preparation being re-read, say) would be replaced.
        try PathClash.check(
            outputs: [.directory("--out", out, writingNames: { $0 == "index.json" || $0.hasSuffix(".bin") })],
            inputs: [("--tokenizer", tokenizerPath)] + inputs.map { ("--input", $0.path) })

        let world = try Communicator.world()
        let tokenizer = try Tokenizer(path: tokenizerPath)
        let hash = SHA256.hex([UInt8](FileManager.default.contents(atPath: tokenizerPath)!))
        // Every rank must see the same inputs and tokenizer, or the shards would mix tokens under one hash.
        // An input is named by its size and the SHA-256 of its first and last MiB: reading it whole on
        // every rank to compare would double the cost of preparing a 200 GB file.
        let fingerprints = try inputs.enumerated().map { i, input in
            (name: "--input \(i + 1)", value: "\(input.source)=\(input.path) (\(try InputFingerprint.of(input.path)))")
        }
        try world.checkAgreement(
            "prepare inputs",
            fields: [
                ("tokenizer (SHA-256)", hash), ("--out", out),
                ("--delimiter", options.delimiter ?? "absent"), ("--text-field", options.textField),
                ("--skip-bad-lines", "\(options.skipBadLines)"),
                ("--shard-tokens", "\(shardTokens)"), ("inputs", "\(inputs.count)"),
            ]
                + fingerprints)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        AtomicFile.removeStaleTemporaries(in: out, log: world.isRoot ? { print($0) } : { _ in })
        let start = Date()
        let plan = Preparation.plan(
            sizes: try inputs.map { try InputFingerprint.size(of: $0.path) },
            splittable: try inputs.map { try DocumentReader.splittable(path: $0.path, options: options) },
            ranks: world.size)
        var mine: [PreparedPart] = []
        for work in plan where work.rank == world.rank {
            mine.append(
                try Preparation.run(
                    work, input: inputs[work.input], options: options, tokenizer: tokenizer,
                    tokenizerHash: hash, shardTokens: shardTokens, directory: out))
        }
        // Rank 0 writes the index from every rank's parts.
        guard let gathered = try world.gather(bytes: [UInt8](try JSONEncoder().encode(mine))) else { return }
        let parts = try gathered.flatMap { try JSONDecoder().decode([PreparedPart].self, from: Data($0)) }
        let index = try Preparation.index(
            parts: parts, inputs: inputs, vocabSize: tokenizer.vocabSize, tokenizerHash: hash)
        try Preparation.write(index, to: out)
        let seconds = Date().timeIntervalSince(start)
        for warning in parts.flatMap(\.warnings) { print("warning: \(warning)") }
        let skipped = parts.reduce(0) { $0 + $1.badLines }
        if skipped > 0 { print("skipped \(skipped) bad line(s) in all") }
        for s in index.sources {
            print("\(s.name): \(s.documents) documents, \(s.tokens) tokens in \(s.shards.count) shard(s)")
        }
        print(
            String(
                format: "prepared %@ with %d rank(s) in %.2f s (tokenizer sha256 %@…)", out, world.size, seconds,
                String(hash.prefix(12))))
    }
}

/// How ranks compare an input without reading it whole.
enum InputFingerprint {
    static func size(of path: String) throws -> Int {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let size = attributes[.size] as? Int
        else {
            throw DatasetError.unreadable(file: path, reason: UnreadablePath.reason(path))
        }
        return size
    }

    static func of(_ path: String) throws -> String {
        let size = try size(of: path)
        let ends = 1 << 20
        let stream = try FileStream(path: path)
        var head = [UInt8](repeating: 0, count: min(size, ends))
        _ = try head.withUnsafeMutableBytes { try readFully(stream, into: $0) }
        var tail = [UInt8](repeating: 0, count: min(size, ends))
        _ = try tail.withUnsafeMutableBytes { try readFully(FileStream(path: path, start: size - $0.count), into: $0) }
        return "\(size) bytes, ends SHA-256 \(SHA256.hex(head + tail).prefix(16))"
    }

    private static func readFully(_ stream: FileStream, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 { break }
            done += n
        }
        return done
    }
}
