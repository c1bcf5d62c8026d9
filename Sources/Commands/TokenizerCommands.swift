// `llama-train tokenizer train`, `tokenize` and `detokenize`: the tokenizer from the command line.
import Checkpoint
import Configuration
import Dataset
import FineTune
import Foundation
import Model
import Support
import Tokenizer
import Tools
import Training

enum TokenizerCommands {
    static let trainSpec = CommandSpec(
        name: "tokenizer train",
        summary: "learn a SentencePiece BPE model with Llama 2's options (split digits, byte fallback, identity)",
        flags: [
            Flag(
                "input", .list, "FILE", required: true,
                "training text, one sentence per line (.gz and .zst read as streams; .parquet: its text column)"),
            Flag("out", .text, "FILE", required: true, "the tokenizer.model to write"),
            Flag(
                "input-sentence-size", .int(min: 1, max: Int.max), "N",
                "train on a seeded uniform sample of N lines (reservoir sampling, as spm_train's option)"),
            Flag("threads", .int(min: 1, max: 1024), "T", default: "1", "threads for counting sentences"),
            Flag(
                "text-field", .text, "NAME",
                "train on this field of .jsonl inputs (line by line) instead of their raw lines; the column of .parquet inputs (default text)"
            ),
            Flag(
                "skip-bad-lines", .toggle, "",
                "skip lines that are not valid UTF-8 (or, in .jsonl inputs, not JSON or lacking the field), each named"),
            Flag(
                "vocab-size", .int(min: 260, max: 1 << 24), "N", default: "\(BPETrainerOptions().vocabSize)",
                "pieces, bytes and specials included"),
            Flag(
                "character-coverage", .number(min: 0, inclusive: false, max: 1), "C",
                default: "\(BPETrainerOptions().characterCoverage)", "share of characters kept as pieces"),
            Flag("user-defined-symbols", .list, "A,B", "pieces that are never split, such as <sep>"),
            Flag(
                "max-piece-length", .int(min: 1, max: 1024), "L",
                default: "\(BPETrainerOptions().maxSentencepieceLength)",
                "longest piece in characters"),
        ],
        run: train)
    static let benchSpec = CommandSpec(
        name: "tokenizer bench",
        summary: "single-thread encoding speed on the lines of the inputs; the last line is JSON",
        flags: [
            Flag("tokenizer", .text, "FILE", required: true, "a tokenizer.model"),
            Flag("input", .list, "FILE", required: true, "text to encode, line by line"),
            Flag("repeat", .int(min: 1, max: 1000), "N", default: "3", "passes, the median reported"),
        ],
        run: bench)
    static let tokenizeSpec = CommandSpec(
        name: "tokenize",
        summary: "JSON Lines {\"text\": ...} on stdin to {\"ids\": [...], \"pieces\": [...]} on stdout",
        flags: [
            Flag("tokenizer", .text, "FILE", required: true, "a tokenizer.model"),
            Flag("bos", .toggle, "start with <s>"),
            Flag("eos", .toggle, "end with </s>"),
        ],
        run: tokenize)
    static let detokenizeSpec = CommandSpec(
        name: "detokenize",
        summary: "JSON Lines {\"ids\": [...]} on stdin to {\"text\": ...} on stdout",
        flags: [Flag("tokenizer", .text, "FILE", required: true, "a tokenizer.model")],
        run: detokenize)

    static func train(_ args: inout Arguments) throws {
        let inputs = args.list("input")
        let out = try args.require("out")
        try PathClash.check(outputs: [.file("--out", out)], inputs: inputs.map { ("--input", $0) })
        var options = BPETrainerOptions()
        options.vocabSize = args.int(declared: "vocab-size")
        // Only when given: the default is BPETrainerOptions' own Float, which the text above only shows.
        if args.string("character-coverage") != nil {
            options.characterCoverage = Float(args.number(declared: "character-coverage"))
        }
        options.userDefinedSymbols = args.list("user-defined-symbols").flatMap {
            $0.split(separator: ",").map(String.init)
        }
        options.maxSentencepieceLength = args.int(declared: "max-piece-length")
        guard !inputs.isEmpty else { throw UsageError("--input FILE is required (repeat it for several files)") }
        let start = Date()
        let counter = try SentenceCounter(options: options, threads: args.int(declared: "threads"))
        let sample = try readTrainingLines(
            inputs, sampleSize: args.int("input-sentence-size"), textField: args.string("text-field"),
            skipBadLines: args.flag("skip-bad-lines"), into: counter)
        let model = try BPETrainer.train(counter, options: options)
        _ = try Tokenizer(model: model, source: out)  // what we write must load
        try AtomicFile.write(Data(model.serialized()), to: out)
        let seconds = Date().timeIntervalSince(start)
        let lines = sample.map { "a sample of \($0.kept) of \($0.seen) lines" } ?? "\(counter.lines) lines"
        print(String(format: "trained %d pieces from %@ in %.2f s: %@", model.pieces.count, lines, seconds, out))
    }

    /// Streams the non-empty lines of `paths` into `counter` in batches, or, given `sampleSize`, keeps a
    /// uniform sample of that many (Algorithm R with a fixed seed, so the sample is reproducible) and counts
    /// only those. Memory is one batch, or the sample.
    static func readTrainingLines(
        _ paths: [String], sampleSize: Int?, textField: String? = nil, skipBadLines: Bool = false,
        into counter: SentenceCounter
    ) throws -> (kept: Int, seen: Int)? {
        var batch: [UInt8] = [], starts = [0]
        var reservoir: [[UInt8]] = [], seen = 0, skipped = 0
        var rng = SplitMix64(seed: 0x7370_6D5F_7472_6169)
        func flush() {
            counter.add(batch: batch, lineStarts: starts)
            batch.removeAll(keepingCapacity: true)
            starts = [0]
        }
        func take(_ bytes: UnsafeBufferPointer<UInt8>) {
            guard !bytes.isEmpty else { return }
            if let n = sampleSize {
                seen += 1
                if reservoir.count < n {
                    reservoir.append(Array(bytes))
                } else {
                    let j = Int(rng.next() % UInt64(seen))
                    if j < n { reservoir[j] = Array(bytes) }
                }
            } else {
                batch.append(contentsOf: bytes)
                batch.append(0x0A)
                starts.append(batch.count)
                if batch.count >= 16 << 20 { flush() }
            }
        }
        for path in paths {
            let format = InputFormat.of(path: path, textField: textField ?? "text", delimiter: nil)
            var documentsOnly = false
            if case .parquet = format { documentsOnly = true }  // Parquet: its text column, always
            if textField != nil, case .jsonLines = format { documentsOnly = true }
            if documentsOnly {
                // Documents (as corpora ship): the text's lines, not the JSON or Parquet around them.
                let documents = try DocumentReader(
                    path: path, options: DocumentOptions(textField: textField ?? "text", skipBadLines: skipBadLines))
                while let part = try documents.next() {
                    for line in part.text.utf8.split(separator: 0x0A, omittingEmptySubsequences: true) {
                        Array(line).withUnsafeBufferPointer { take($0) }
                    }
                }
                continue
            }
            let lines = LineReader(try openByteStream(path))
            while try lines.next({ bytes, _ in
                // No silent U+FFFD: a line that is not UTF-8 is refused where it is, or skipped and counted.
                if let bad = TextLines.firstInvalidByte(bytes) {
                    let place = "\(path):\(lines.lineNumber): invalid UTF-8 at byte \(bad + 1)"
                    guard skipBadLines else {
                        throw DatasetError.invalid(
                            place + "; fix the line, or pass --skip-bad-lines to skip such lines")
                    }
                    if skipped < 5 { print("warning: \(place) (skipped)") }
                    skipped += 1
                    return
                }
                take(bytes)
            }) != nil {}
        }
        if skipped > 0 { print("skipped \(skipped) line(s) that are not valid UTF-8") }
        guard sampleSize != nil else {
            flush()
            return nil
        }
        for line in reservoir {
            batch.append(contentsOf: line)
            batch.append(0x0A)
            starts.append(batch.count)
        }
        flush()
        return (reservoir.count, seen)
    }

    static func tokenize(_ args: inout Arguments) throws {
        let tokenizer = try Tokenizer(path: try args.require("tokenizer"))
        let bos = args.flag("bos"), eos = args.flag("eos")
        try forEachJSONLine { object, line in
            guard let text = object["text"] as? String else {
                throw UsageError("standard input line \(line): no string field 'text'")
            }
            let ids = tokenizer.encode(text, bos: bos, eos: eos)
            return ["ids": ids.map(Int.init), "pieces": tokenizer.pieces(ids)]
        }
    }

    static func detokenize(_ args: inout Arguments) throws {
        let tokenizer = try Tokenizer(path: try args.require("tokenizer"))
        try forEachJSONLine { object, line in
            guard let ids = object["ids"] as? [NSNumber] else {
                throw UsageError("standard input line \(line): no integer array field 'ids'")
            }
            return ["text": try tokenizer.decode(ids.map { Int32(truncatingIfNeeded: $0.intValue) })]
        }
    }

    /// Reads JSON Lines on standard input and writes one JSON object per input line.
    private static func forEachJSONLine(_ body: ([String: Any], Int) throws -> [String: Any]) throws {
        try TextLines.forEach(descriptor: 0, source: "standard input") { lineNumber, line in
            if line.isEmpty { return }
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                throw UsageError("standard input line \(lineNumber): not a JSON object")
            }
            let result = try body(object, lineNumber)
            let data = try JSONSerialization.data(withJSONObject: result, options: [.withoutEscapingSlashes])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
    }
}

extension TokenizerCommands {
    /// `tokenizer bench --tokenizer FILE --input FILE... [--repeat N]`: single-thread encoding speed on the
    /// lines of the inputs (line-sized inputs, as data preparation sees them); last line JSON.
    static func bench(_ args: inout Arguments) throws {
        let tokenizer = try Tokenizer(path: try args.require("tokenizer"))
        let inputs = args.list("input")
        let repeats = args.int(declared: "repeat")
        var lines: [String] = []
        for path in inputs {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw FileError(path: path, message: "cannot read")
            }
            lines += try TextLines.lines([UInt8](data), source: path).map { try $0.text.get() }
        }
        let bytes = lines.reduce(0) { $0 + $1.utf8.count }
        var rates: [Double] = []
        var tokens = 0
        for _ in 0..<max(repeats, 1) {
            let start = Date()
            tokens = 0
            for line in lines { tokens += tokenizer.encode(line).count }
            rates.append(Double(bytes) / Date().timeIntervalSince(start) / 1e6)
        }
        let median = rates.sorted()[rates.count / 2]
        print(
            String(
                format: "encoded %d lines, %.2f MB into %d tokens: %.2f MB/s (median of %d)", lines.count,
                Double(bytes) / 1e6, tokens, median, rates.count))
        print("{\"encode_mb_per_s\": \(median), \"lines\": \(lines.count), \"bytes\": \(bytes), \"tokens\": \(tokens)}")
    }
}
